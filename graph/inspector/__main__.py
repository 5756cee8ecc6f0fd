"""``python -m graph.inspector``: the inspector's command line."""
import sys

from .core import main

sys.exit(main())
