"""Moved: ``fusion`` takes any symbol, so it lives in ``graph.fusion`` now; this name still works."""
import sys

from . import common

sys.modules[__name__] = common.sibling("graph.fusion")
