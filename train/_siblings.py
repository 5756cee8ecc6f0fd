"""The sibling packages, found the same way from a checkout and from an installed copy.

From a checkout ``symbols``/``data`` are top-level packages beside ``train``; installed,
all three live under ``mxcnn`` (see setup.py), so the relative import works there.
"""
try:
    from .. import data, symbols  # installed: mxcnn.train -> mxcnn.symbols, mxcnn.data
except ImportError:
    import data  # noqa: F401  (checkout: run from the repository root)
    import symbols  # noqa: F401

__all__ = ["data", "symbols", "submodule"]


def submodule(package, name):
    """``symbols.<name>`` / ``data.<name>`` from a checkout or the installed mxcnn package."""
    import importlib
    return importlib.import_module(globals()[package].__name__ + "." + name)
