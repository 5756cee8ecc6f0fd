"""Inspect any MXNet symbol: per-layer shapes, parameters, MACs and activation memory.

``python -m graph.inspector NAME|prefix-symbol.json`` (``mxcnn-inspect`` when installed);
the counting rules are stated in :mod:`graph.inspector.core`.
"""
from .core import *  # noqa: F401,F403
from .core import __all__, main  # noqa: F401
