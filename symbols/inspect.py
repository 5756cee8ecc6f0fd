"""Moved: the inspector takes any symbol, so it lives in ``graph.inspector`` now.

Kept so that ``python -m symbols.inspect`` and ``from symbols import inspect`` still work.
"""
import sys

from . import common

_inspector = common.sibling("graph.inspector")
globals().update({name: getattr(_inspector, name) for name in _inspector.__all__})
main = _inspector.main
__all__ = list(_inspector.__all__)

if __name__ == "__main__":
    sys.exit(main())
