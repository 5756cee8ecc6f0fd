"""The graph the training engines bind: a symbol rewritten for oneDNN's fast CPU kernels, then
converted to the compute precision.

Every rewrite keeps the symbol's argument, auxiliary and output names, so parameters,
optimizer states and checkpoints are those of the symbol as built.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mxcnn.graph import channel_pad, fusion, global_pool, layout_barrier, precision

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["ONEDNN_REWRITES", "training_graph", "onednn_cpus"]

ONEDNN_REWRITES = ("global_pool", "layout_barrier", "channel_pad", "fusion")


def training_graph(sym: mx.sym.Symbol, contexts: Sequence[mx.Context], data_shape: Sequence[int],
                   fuse: bool = True, dtype: str = "float32",
                   rewrites: Iterable[str] = ONEDNN_REWRITES) -> mx.sym.Symbol:
    """The graph the engines bind: ``sym`` rewritten for oneDNN's fast kernels on CPUs, then
    converted to the compute ``dtype`` (``graph.precision.training_symbol``: float32 weights,
    BatchNorm statistics and outputs).  The conversion comes last because the other passes
    round-trip the graph through JSON, which drops AMP's casts.

    On oneDNN CPU contexts, global pooling becomes MXNet's own reductions
    (``graph.global_pool``: the pooling's backward runs oneDNN's ``ref`` kernel on AVX-512
    and drags the BatchNorm backwards behind it onto ``ref`` too), grouped convolutions
    narrower than oneDNN's block get plain-layout barriers (``graph.layout_barrier``: their
    odd blocked layouts put the BatchNorms around them on ``ref``), concatenations of pieces
    that are no multiple of 16 channels, and on AVX-512 convolutions of 8-aligned filters,
    get zero channels up to one (``graph.channel_pad``: MXNet keeps the first in plain
    layouts, on gemm and ncsp kernels, and oneDNN runs the second's AVX2 kernels), and BatchNorm+ReLU
    pairs are fused (``graph.fusion``) unless ``fuse=False`` (``--no-fusion``;
    memonger-planned graphs are not fused).  All keep every name, so parameters, optimizer
    states and checkpoints are those of ``sym`` (channel_pad pads some BatchNorms' moving
    statistics, which ``mxcnn.train.engines.make_engine`` maps back); ``fit``
    writes ``sym`` itself to ``-symbol.json`` (GlobalAveragePool for ONNX, cuDNN pooling on
    GPUs).  GPU contexts and a build without oneDNN train ``sym``.
    ``rewrites``: the subset of :data:`ONEDNN_REWRITES` to apply (bench/throughput.py's knobs
    measure each one's worth).
    """
    rewrites = [r for r in rewrites if fuse or r != "fusion"]
    sym = _onednn_graph(sym, contexts, data_shape, rewrites)
    if dtype == "float32":
        return sym
    low = precision.training_symbol(sym, dtype)
    logging.getLogger("mxcnn.train").info(
        "%s: %d convolutions in %s, float32 master weights; kept in float32: %s", dtype,
        precision.low_precision_ops(low, dtype).get("Convolution", 0), dtype,
        ", ".join(precision.float32_layers(sym)) or "nothing")
    return low


def onednn_cpus(contexts: Iterable[mx.Context]) -> bool:
    """True when every context is a CPU and this MXNet runs oneDNN there: the contexts whose
    binds get the oneDNN graph rewrites."""
    return (all(ctx.device_type == "cpu" for ctx in contexts)
            and fusion.available())


def _onednn_graph(sym, contexts, data_shape, rewrites):
    """``sym`` with the oneDNN CPU ``rewrites`` of ``training_graph`` (itself elsewhere)."""
    unknown = set(rewrites) - set(ONEDNN_REWRITES)
    if unknown:
        raise ValueError("unknown graph rewrite(s) %s; choose from %s"
                         % (", ".join(sorted(unknown)), ", ".join(ONEDNN_REWRITES)))
    if not onednn_cpus(contexts):
        return sym
    # each keeps a oneDNN reference kernel off the training step (bench/kernel_audit.py)
    if "global_pool" in rewrites:
        sym, _ = global_pool.reduce_global_pools(sym, data=tuple(data_shape))
    if "layout_barrier" in rewrites:
        sym, _ = layout_barrier.plain_around_narrow_groups(sym)
    if "channel_pad" in rewrites:
        sym, count = channel_pad.pad_channels(sym, data=tuple(data_shape))
        if count:
            logging.getLogger("mxcnn.train").info(
                "oneDNN: %d convolutions and channel concatenations padded to 16-channel "
                "blocks (zero channels added) for training", count)
    if "fusion" not in rewrites:
        return sym
    fused, count = fusion.fuse_bn_relu(sym, data=tuple(data_shape))
    if count:
        logging.getLogger("mxcnn.train").info(
            "oneDNN: %d BatchNorm+ReLU pairs fused for training (--no-fusion to keep them apart)",
            count)
    return fused
