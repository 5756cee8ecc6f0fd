"""Passes and tools that take ANY symbol, apart from the families that build them.

* ``memonger`` -- the mirroring planner (``__force_mirroring__`` segments, budget search).
* ``fusion`` -- the training-graph rewrite that fuses BatchNorm+ReLU on oneDNN CPUs.
* ``global_pool`` -- the training-graph rewrite that computes global pooling with MXNet's
  reductions on oneDNN CPUs (the pooling's backward runs a ``ref`` kernel on AVX-512).
* ``layout_barrier`` -- plain-layout barriers around grouped convolutions narrower than
  oneDNN's channel block (their odd layouts put the BatchNorms around them on ``ref``).
* ``channel_pad`` -- the training-graph rewrite that pads channel concatenations (DenseNet)
  and, on AVX-512, 8-aligned convolutions (airbench's whitening) to oneDNN's 16-channel
  block with zero channels (MXNet keeps unaligned tensors in plain layouts, on gemm and
  ncsp kernels, and oneDNN runs 8-blocked ones on AVX2 kernels); the only pass that changes shapes: the padded
  BatchNorms' moving statistics, which ``train.engines`` maps back.
* ``onednn_inference`` -- the inference graph for MXNet's oneDNN fusion and int8 backends:
  cuts the one pattern their fusion computes wrongly (an operator folded into a fused node
  whose output is also read elsewhere: PreAct's CIFAR stem), and names the layers int8 must
  keep in float32 (grouped convolutions).
* ``precision`` -- the bfloat16/float16 training graph through MXNet's AMP (float32 master
  weights and BatchNorm), with the repair of AMP's mixed Concats.
* ``kernel_audit`` -- which oneDNN kernels a training step runs (DNNL_VERBOSE parser, one
  step in a subprocess, ``ref`` and reorder shares); bench/kernel_audit.py is its CLI.
* ``inspector`` -- counting rules and summary tables (``analysis``), DOT/HTML renderers
  and the ``mxcnn-inspect`` CLI: ``python -m mxcnn.graph.inspector NAME|symbol.json``.

Every training-graph pass keeps the names of the symbol's arguments, auxiliary states and
outputs (``_rebuild.check_interface``), so parameters and checkpoints are those of the
original.

``symbols`` builds networks and knows nothing of these; ``train`` applies them.
"""
