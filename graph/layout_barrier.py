"""Training-graph rewrite for oneDNN CPUs: plain-layout barriers around narrow grouped convolutions.

oneDNN 2.4 (mxnet 1.9.1) computes a grouped convolution whose groups are narrower than its
16-channel block (ResNeXt-50 32x4d: 4 and 8 channels per group) in a matching blocked layout
(``aBcd4b``, ``aBcd8b``), while the 1x1 convolutions around it use ``aBcd16b``.  A BatchNorm
between the two then gets its data in one blocked layout and its gradient in another, and
runs its backward in the reference kernel (``bnorm_ref:any``): measured with
graph/kernel_audit.py on an AVX-512 Xeon, 25-63% of ResNeXt-50's and 18-42% of SE-ResNeXt-50's
oneDNN time per training step.

A no-op ``Reshape`` (to the same shape) on the convolution's input and on its output is one
of MXNet's own operators: it hands oneDNN tensors over in the plain NCHW layout, forward and
backward, which every BatchNorm kernel takes on its JIT path (a plain gradient is reordered
to the data's layout first).  Cost: one activation reorder each way per barrier.

Only the training bind needs it (the saved ``-symbol.json`` stays as built, like
``graph.global_pool``); depthwise convolutions (one channel per group, MobileNet) and groups
of 16, 32, ... channels keep oneDNN's layouts and are left alone.  Contract: same
arguments, auxiliary states and outputs (parameters are Variables of their own names); the
input barrier is ``<conv>_plain_in``, the convolution becomes ``<conv>_grouped`` and the
output barrier takes its name (so ``<conv>_output`` still exists); barriers carry the
convolution's private ``__...__`` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mxcnn.graph.symbol_json import load_rewritten, symbol_graph

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["BLOCK", "narrow_grouped_convs", "plain_around_narrow_groups"]

#: oneDNN's FP32 channel block on AVX-512 (AVX2's 8 divides it).
BLOCK = 16


def _int(attrs, key, default):
    try:
        return int(attrs.get(key, default))
    except (TypeError, ValueError):
        return None


def narrow_grouped_convs(graph: Mapping[str, Any]) -> list[int]:
    """Node ids of the grouped, non-depthwise convolutions whose output groups are narrower
    than :data:`BLOCK` channels (or no multiple of it) in ``graph`` (symbol JSON dict).

    Depthwise means one output map per group (``num_group == num_filter``), as MXNet's
    families build them.
    """
    found = []
    for index, node in enumerate(graph["nodes"]):
        if node["op"] != "Convolution":
            continue
        attrs = node.get("attrs", {})
        groups, filters = _int(attrs, "num_group", 1), _int(attrs, "num_filter", 0)
        if not groups or not filters or groups == 1 or groups == filters:
            continue
        if attrs.get("kernel", "").count(",") != 1:  # 2-D convolutions (4-D tensors) only
            continue
        if (filters // groups) % BLOCK:
            found.append(index)
    return found


def _barrier(name, source, private):
    """``clip(x, -inf, inf)``: the identity (inf and NaN pass unchanged), gradient included."""
    return {"op": "clip", "name": name, "attrs": dict(private, a_min="-inf", a_max="inf"),
            "inputs": [source]}


def plain_around_narrow_groups(sym: mx.sym.Symbol) -> tuple[mx.sym.Symbol, int]:
    """``(symbol, count)``: ``sym`` with a no-op Reshape before and after each convolution of
    :func:`narrow_grouped_convs` (``count`` of them); ``(sym, 0)`` when there is none."""
    graph = symbol_graph(sym, keep_amp_casts=True)  # keep AMP casts, if any
    wanted = set(narrow_grouped_convs(graph))
    if not wanted:
        return sym, 0
    nodes, new_id = [], {}
    remap = lambda ref: [new_id[ref[0]]] + list(ref[1:])  # noqa: E731
    for old, node in enumerate(graph["nodes"]):
        inputs = [remap(ref) for ref in node["inputs"]]
        if old not in wanted:
            nodes.append(dict(node, inputs=inputs))
            new_id[old] = len(nodes) - 1
            continue
        private = {k: v for k, v in node.get("attrs", {}).items() if k.startswith("__")}
        nodes.append(_barrier(node["name"] + "_plain_in", inputs[0], private))
        nodes.append(dict(node, name=node["name"] + "_grouped",
                          inputs=[[len(nodes) - 1, 0, 0]] + inputs[1:]))
        nodes.append(_barrier(node["name"], [len(nodes) - 1, 0, 0], private))
        new_id[old] = len(nodes) - 1
    rebuilt = {"nodes": nodes, "arg_nodes": [new_id[i] for i in graph["arg_nodes"]],
               "heads": [remap(head) for head in graph["heads"]], "attrs": graph.get("attrs", {})}
    return load_rewritten(rebuilt, sym, "layout barriers"), len(wanted)
