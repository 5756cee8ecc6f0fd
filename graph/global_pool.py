"""Training-graph rewrite for oneDNN CPUs: global pooling computed by MXNet's reductions.

``Pooling(global_pool=True, pool_type='avg')`` over (N, C, H, W) and
``mean(axis=(2, 3), keepdims=True)`` compute the same (N, C, 1, 1) tensor and the same
gradient (1/(H*W) broadcast over each map); global max pooling and ``pick(x, argmax(x))``
over the flattened map likewise (the gradient goes to the first maximum).  oneDNN 2.4
(mxnet 1.9.1) runs them very differently on AVX-512 CPUs (measured with ``DNNL_VERBOSE=1``,
graph/kernel_audit.py):

* forward: the pooling runs ``pooling_v2 jit:avx512_core``; fine either way;
* backward: the pooling (avg or max: any whose output is 1x1) runs ``pooling_v2 ref:any``
  and returns its gradient in the odd blocked layout ``acdB16b``.  Every BatchNorm backward
  that receives that gradient (ResNet v1's last stage, through the residual sums; the
  BN->ReLU in front of a PreAct head; the squeeze pool of every SE block; airbench's max
  head) then runs ``bnorm_ref:any`` and the sums ``sum ref:any``: 46% of ResNet-20's oneDNN
  time, 2x its training speed on a Sapphire Rapids Xeon.  On Zen 3 (AVX2) the same graph
  stayed on JIT kernels.

MXNet's own reductions return their gradient in the plain layout, which every oneDNN kernel
downstream takes on its JIT path (plus one cheap reorder).

Why a rewrite of the bound graph and not of the emitted symbol: only the training bind
meets the ``ref`` path (inference binds run the pooling forward only, on JIT kernels), and
the symbol saved to ``-symbol.json`` stays the canonical network: plain MXNet, Gluon
``SymbolBlock.imports``, GPU contexts (cuDNN pooling) and the ONNX exporter (one
``GlobalAveragePool``) load it unchanged.  Contract: same arguments, auxiliary states and
outputs; the last replacing node keeps the Pooling's name (so ``<name>_output`` still
exists) and every replacing node its private ``__...__`` attributes (memory-mirroring marks).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import mxnet as mx

from mxcnn.graph.symbol_json import load_rewritten, symbol_graph

__all__ = ["global_pools", "reduce_global_pools"]


def _truthy(value):
    return str(value).strip() in ("True", "true", "1")


def global_pools(graph: Mapping[str, Any]) -> list[int]:
    """Node ids of the global average and max poolings over NCHW in ``graph`` (symbol JSON)."""
    found = []
    for index, node in enumerate(graph["nodes"]):
        attrs = node.get("attrs", {})
        if node["op"] != "Pooling" or not _truthy(attrs.get("global_pool", "False")):
            continue
        if attrs.get("pool_type", "max") not in ("avg", "max"):  # MXNet's default is max
            continue
        if attrs.get("layout", "None") not in ("None", "NCHW"):
            continue
        found.append(index)
    return found


def _four_d(sym, graph, ids, shapes):
    """The subset of ``ids`` whose output (hence input) is 4-D, by shape inference.

    Empty when the shapes are missing or do not fit: then the graph stays as it is.
    """
    if not ids or not shapes:
        return []
    internals = sym.get_internals()
    names = ["%s_output" % graph["nodes"][i]["name"] for i in ids]
    if any(name not in internals.list_outputs() for name in names):
        return []
    try:
        _, out_shapes, _ = mx.sym.Group([internals[name] for name in names]).infer_shape(**shapes)
    except Exception:  # shapes that do not fit the graph
        return []
    if out_shapes is None:
        return []
    return [i for i, shape in zip(ids, out_shapes) if shape is not None and len(shape) == 4]


def _replacement(node, source):
    """JSON nodes (inputs as ``("new", k)`` for the k-th of these, or ``source``) that compute
    ``node``'s global pooling; the last one keeps ``node``'s name.

    avg: ``mean(axis=(2, 3), keepdims=True)``.  max: the value at the first maximum,
    ``pick(x, argmax(x))`` over the flattened map, whose gradient goes to that one element as
    the pooling's does (``max(axis=...)`` would hand it to every tied maximum).
    """
    name = node["name"]
    private = {k: v for k, v in node.get("attrs", {}).items() if k.startswith("__")}
    if node.get("attrs", {}).get("pool_type", "max") == "avg":
        return [{"op": "mean", "name": name, "attrs": dict(private, axis="(2, 3)", keepdims="True"),
                 "inputs": [source]}]
    return [
        {"op": "Reshape", "name": name + "_flat", "attrs": dict(private, shape="(0, 0, -1)"),
         "inputs": [source]},
        {"op": "argmax", "name": name + "_argmax", "attrs": dict(private, axis="2"),
         "inputs": [("new", 0)]},
        {"op": "pick", "name": name + "_pick", "attrs": dict(private, axis="2", keepdims="True"),
         "inputs": [("new", 0), ("new", 1)]},
        {"op": "Reshape", "name": name, "attrs": dict(private, shape="(0, 0, 1, 1)"),
         "inputs": [("new", 2)]},
    ]


def _rebuild(graph, replace):
    """``graph`` with each node id in ``replace`` swapped for its :func:`_replacement` nodes."""
    nodes, new_id = [], {}
    remap = lambda ref: [new_id[ref[0]]] + list(ref[1:])  # noqa: E731
    for old, node in enumerate(graph["nodes"]):
        if old not in replace:
            nodes.append(dict(node, inputs=[remap(ref) for ref in node["inputs"]]))
            new_id[old] = len(nodes) - 1
            continue
        first = len(nodes)
        for part in _replacement(node, node["inputs"][0]):
            inputs = [[first + ref[1], 0, 0] if ref[0] == "new" else remap(ref)
                      for ref in part["inputs"]]
            nodes.append(dict(part, inputs=inputs))
        new_id[old] = len(nodes) - 1
    return {"nodes": nodes, "arg_nodes": [new_id[i] for i in graph["arg_nodes"]],
            "heads": [remap(head) for head in graph["heads"]], "attrs": graph.get("attrs", {})}


def reduce_global_pools(sym: mx.sym.Symbol, **shapes: Sequence[int]) -> tuple[mx.sym.Symbol, int]:
    """``(symbol, count)``: ``sym`` with each global average or max Pooling over a 4-D input
    computed by MXNet's own reductions (:func:`_replacement`), under the same name;
    ``(sym, 0)`` when there is none.

    ``shapes``: the input shapes of the bind (``data=(N, C, H, W)``), to check the inputs
    are 4-D (1-D and 3-D global poolings are left alone).
    """
    graph = symbol_graph(sym, keep_amp_casts=True)  # keep AMP casts, if any
    ids = _four_d(sym, graph, global_pools(graph), shapes)
    if not ids:
        return sym, 0
    return load_rewritten(_rebuild(graph, set(ids)), sym, "global-pool rewrite"), len(ids)
