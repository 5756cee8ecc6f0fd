"""``python -m graph.inspector``: the inspector's command line."""
import sys

from .cli import main

sys.exit(main())
