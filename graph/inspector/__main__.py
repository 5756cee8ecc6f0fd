"""``python -m mxcnn.graph.inspector``: the inspector's command line."""
import sys

from mxcnn.graph.inspector.cli import main

sys.exit(main())
