"""Passes and tools that take ANY symbol, apart from the families that build them.

* ``memonger`` -- the mirroring planner (``__force_mirroring__`` segments, budget search).
* ``fusion`` -- the training-graph rewrite that fuses BatchNorm+ReLU on oneDNN CPUs.
* ``global_pool`` -- the training-graph rewrite that computes global pooling with MXNet's
  reductions on oneDNN CPUs (the pooling's backward runs a ``ref`` kernel on AVX-512).
* ``kernel_audit`` -- which oneDNN kernels a training step runs (DNNL_VERBOSE parser, one
  step in a subprocess, ``ref`` and reorder shares); bench/kernel_audit.py is its CLI.
* ``inspector`` -- counting rules and summary tables (``analysis``), DOT/HTML renderers
  and the ``mxcnn-inspect`` CLI: ``python -m graph.inspector NAME|symbol.json``.

``symbols`` builds networks and knows nothing of these; ``train`` applies them.
"""
try:
    from .. import common  # installed: mxcnn.graph -> mxcnn.common
except ImportError:
    import common  # noqa: F401  (a checkout: the repository root is on sys.path)
