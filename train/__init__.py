"""Training, evaluation and launching for the networks in ``symbols``.

Kept free of imports so that ``train.runtime.configure()`` can run before MXNet loads.
"""
try:
    from .. import common  # installed: mxcnn.train -> mxcnn.common
except ImportError:
    import common  # noqa: F401  (a checkout: the repository root is on sys.path)
