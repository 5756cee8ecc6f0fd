"""Passes and tools that take ANY symbol, apart from the families that build them.

* ``memonger`` -- the mirroring planner (``__force_mirroring__`` segments, budget search).
* ``fusion`` -- the training-graph rewrite that fuses BatchNorm+ReLU on oneDNN CPUs.
* ``inspector`` -- counting rules and summary tables (``analysis``), DOT/HTML renderers
  and the ``mxcnn-inspect`` CLI: ``python -m graph.inspector NAME|symbol.json``.

``symbols`` builds networks and knows nothing of these; ``train`` applies them.
"""
try:
    from .. import common  # installed: mxcnn.graph -> mxcnn.common
except ImportError:
    import common  # noqa: F401  (a checkout: the repository root is on sys.path)
