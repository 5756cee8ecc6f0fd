"""Training-graph fusion for oneDNN CPUs: BatchNorm followed by ReLU becomes one operator.

``fuse_bn_relu(sym)`` rewrites every ``BatchNorm -> Activation(relu)`` pair, where the ReLU
is the BatchNorm output's only consumer and feeds only convolutions (the one case MXNet
1.9.1's fused backward handles), into MXNet's ``_contrib_BatchNormWithReLU`` (oneDNN's
batch normalization with the ``fuse_norm_relu`` flag).  Forward, the normalised values are
clipped in the same pass; backward, the ReLU mask is applied inside the BatchNorm backward,
so one elementwise pass over the activation and its gradient disappears per pair.

Contract: the rewritten symbol has the same arguments, auxiliary states, outputs and
parameter names as ``sym`` (the fused node keeps the BatchNorm's name and attributes), and
computes the same values and gradients.  The operator exists only on the CPU with oneDNN,
so the trainer fuses the graph it binds on CPU contexts and keeps writing the unfused
symbol to ``-symbol.json`` (loadable anywhere, exportable to ONNX).

Graphs carrying memory-mirroring marks (``graph.memonger``) are left alone: the planner
measured the unfused graph.
"""
import os
from collections.abc import Sequence

import mxnet as mx

from mxcnn.graph.memonger import MIRROR_ATTR
from mxcnn.graph.symbol_json import load_rewritten, symbol_graph

FUSED_OP = "_contrib_BatchNormWithReLU"
#: Channel counts of both tensors of a fused pair must be multiples of this (oneDNN's FP32
#: block: 8 lanes with AVX2, 16 with AVX-512; 16 covers both).
CHANNEL_BLOCK = 16
#: Producers of the BatchNorm input for which the fused gradients were checked exact against
#: the unfused graph (tests/symbols/test_fusion.py).  Not Pooling: DenseNet-BC's
#: pool -> BN -> ReLU -> conv got wrong gradients; nor MXNet's own kernels (reshape, concat).
BLOCKED_PRODUCERS = ("Convolution", "elemwise_add", "_Plus", "_plus", "ElementWiseSum", "add_n")

__all__ = ["FUSED_OP", "available", "fuse_bn_relu"]


def available() -> bool:
    """True when this MXNet has oneDNN enabled, the only backend of the fused operator."""
    if os.environ.get("MXNET_MKLDNN_ENABLED", "1").strip() in ("0", "false", "False"):
        return False
    try:
        return bool(mx.runtime.Features().is_enabled("MKLDNN"))
    except Exception:  # very old builds without the feature list
        return False


def _is_relu(node):
    return node["op"] == "Activation" and node.get("attrs", {}).get("act_type") == "relu"


def _fusable_pairs(graph, channels):
    """``{relu_node_id: batchnorm_node_id}`` for the pairs that can be fused.

    ``channels``: ``{batchnorm_node_id: channels}``; a BatchNorm missing from it is not fused.
    """
    nodes = graph["nodes"]
    consumers = {}
    for index, node in enumerate(nodes):
        for source in node["inputs"]:
            consumers.setdefault((source[0], source[1]), []).append(index)
    heads = {(head[0], head[1]) for head in graph["heads"]}
    pairs = {}
    for index, node in enumerate(nodes):
        if not _is_relu(node):
            continue
        bn_id, out_index = node["inputs"][0][0], node["inputs"][0][1]
        bn = nodes[bn_id]
        attrs = bn.get("attrs", {})
        if bn["op"] != "BatchNorm" or out_index != 0:
            continue
        if attrs.get("axis", "1") != "1" or attrs.get("output_mean_var", "False") in ("True", "1", "true"):
            continue
        if consumers.get((bn_id, 0)) != [index] or (bn_id, 0) in heads or (index, 0) in heads:
            continue
        # MXNet 1.9.1's fused backward cannot take every gradient layout: one that comes from
        # Pooling or an elementwise sum fails ("could not create a primitive descriptor
        # iterator"); gradients from Convolution backward (one or several, summed) work.
        users = consumers.get((index, 0), [])
        if not users or any(nodes[user]["op"] != "Convolution" for user in users):
            continue
        # ... and it computes wrong gradients (silently) when a tensor on either side is not
        # in oneDNN's blocked layout: a channel count that is no multiple of the vector
        # block (8 with AVX2, 16 with AVX-512) or an input that MXNet produced itself.
        source = nodes[bn["inputs"][0][0]]
        if source["op"] not in BLOCKED_PRODUCERS:
            continue
        widths = [channels.get(bn_id)] + [_num_filter(nodes[user]) for user in users]
        if any(w is None or w % CHANNEL_BLOCK for w in widths):
            continue
        # ... and it fails ("could not create a primitive descriptor iterator"; found by
        # bench/kernel_audit.py) next to a grouped convolution whose groups are narrower than
        # that block, feeding it (ResNeXt-50 32x4d: 4 and 8 channels per group; 2x24d) or fed
        # by it (8 per group).  16 and 32 per group work, and so do depthwise convolutions.
        if not all(_groups_fit(nodes[user], channels[bn_id]) for user in users):
            continue
        if source["op"] == "Convolution" and not _groups_fit(source):
            continue
        pairs[index] = bn_id
    return pairs


def _groups_fit(conv, in_channels=None):
    """True for a plain or depthwise convolution, or a grouped one whose groups span whole
    ``CHANNEL_BLOCK``s of output (and of ``in_channels``, when given) channels."""
    try:
        groups = int(conv.get("attrs", {}).get("num_group", "1"))
    except (TypeError, ValueError):
        return False
    out = _num_filter(conv)
    if groups == 1 or groups == (in_channels or out):  # plain, or depthwise (one map per group)
        return True
    widths = [out] + ([in_channels] if in_channels else [])
    return all(w is not None and (w // groups) % CHANNEL_BLOCK == 0 for w in widths)


def _num_filter(node):
    try:
        return int(node.get("attrs", {}).get("num_filter"))
    except (TypeError, ValueError):
        return None


def _batchnorm_channels(sym, graph, shapes):
    """``{node_id: channels}`` of every BatchNorm, by shape inference (empty if unknown)."""
    names = {node["name"]: index for index, node in enumerate(graph["nodes"])
             if node["op"] == "BatchNorm"}
    internals = sym.get_internals()
    outputs = internals.list_outputs()
    wanted = [name + "_output" for name in names if name + "_output" in outputs]
    if not wanted or not shapes:
        return {}
    probe = mx.sym.Group([internals[name] for name in wanted])
    try:
        _, out_shapes, _ = probe.infer_shape(**shapes)
    except Exception:  # shapes that do not fit: leave every pair unfused
        return {}
    if out_shapes is None:
        return {}
    return {names[name[:-len("_output")]]: int(shape[1]) for name, shape in zip(wanted, out_shapes)
            if shape and len(shape) > 1}


def fuse_bn_relu(sym: mx.sym.Symbol, **shapes: Sequence[int]) -> tuple[mx.sym.Symbol, int]:
    """``(fused_symbol, pairs_fused)``; ``sym`` itself (and 0) when nothing can be fused.

    ``shapes``: the input shapes the graph will be bound with (``data=(N, C, H, W)``), from
    which the channel counts are inferred.
    """
    graph = symbol_graph(sym)
    nodes = graph["nodes"]
    if any(MIRROR_ATTR in node.get("attrs", {}) for node in nodes):
        return sym, 0
    pairs = _fusable_pairs(graph, _batchnorm_channels(sym, graph, shapes))
    if not pairs:
        return sym, 0
    keep = [i for i in range(len(nodes)) if i not in pairs]
    new_id = {old: new for new, old in enumerate(keep)}

    def redirect(ref):
        node_id = ref[0]
        if node_id in pairs:  # a ReLU's output is now output 0 of its fused BatchNorm
            node_id, ref = pairs[node_id], [pairs[node_id], 0] + list(ref[2:])
        return [new_id[node_id]] + list(ref[1:])

    fused_nodes = []
    for old in keep:
        node = dict(nodes[old])
        if old in pairs.values():
            node["op"] = FUSED_OP
        node["inputs"] = [redirect(ref) for ref in node["inputs"]]
        fused_nodes.append(node)
    fused = {"nodes": fused_nodes,
             "arg_nodes": [new_id[i] for i in graph["arg_nodes"]],
             "heads": [redirect(head) for head in graph["heads"]],
             "attrs": graph.get("attrs", {})}
    return load_rewritten(fused, sym, "BN+ReLU fusion"), len(pairs)
