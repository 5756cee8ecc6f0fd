"""The inference graph for MXNet's oneDNN subgraph backends, made right where they are wrong.

MXNet 1.9.1 fuses an inference bind (``grad_req='null'``) with its ``MKLDNN`` subgraph
backend (Convolution + BatchNorm + ReLU + elementwise sum into one ``_sg_mkldnn_conv``), and
its int8 flow partitions the graph with ``MKLDNN_QUANTIZE``, which uses the same selectors.
Both were checked on every registered family, CIFAR and ImageNet layouts
(tests/inference/test_int8.py), against the unfused float32 graph.

**Fusion: one wrong pattern, rewritten (``guard_fusion``).**  The convolution selector absorbs
a BatchNorm (and the ReLU after it) into the convolution even when the convolution's own
output is also read by another node; that node then gets the normalised, rectified tensor
instead of the convolution's.  Of the registered families only PreAct ResNet's CIFAR layout
has it: the stem convolution feeds both the first unit's BatchNorm and its shortcut addition
(logits off by up to 0.6 on PreAct-20, probabilities by 1e-2; int8 inherits the same error).
Any graph can have it (a deep-supervision head reading a convolution, a user's symbol), so
the pattern is found on the partitioned graph itself (``fusion_escapes``: an operator folded
into a fused node whose output is read outside it) and cut with a ``BlockGrad`` between the
operator and the consumers inside the fused node.  ``BlockGrad`` is an identity in the
forward pass that the backend keeps (it removes ``_copy``); the operator then runs on its
own and its output is what both consumers read.  Every other pattern computed the same
values fused as unfused (logits within 1e-4 of their size), so the fused graph is used for
every family (inference/predict.py ``bind_inference``).

**int8: a GELU fused into a quantized convolution, cut (``guard_int8_activations``).**  The
quantized convolution applies its fused activation to the requantized (int8-scaled) output,
which is right for ReLU (it commutes with a positive scale) and wrong for GELU, whose shape
depends on the scale: airbench (GELU after every convolution) scored 38.5% in int8 against
89.9% in float32 (``--preset fast`` trained on the whole training set, 5,000 test images),
and 89.8% with the activations cut off the convolutions (logits at random weights off by
0.44 of their size -> 0.06).  Sigmoid (SE gates) and tanh (LeNet) gave the same values cut or
not.  The cut is the fusion guard's ``BlockGrad``: the convolution (with its BatchNorm) stays
int8, the activation runs in float32 between a dequantize and a quantize.

**int8: one wrong layer kind, excluded (``int8_excluded_layers``).**  Quantized grouped
convolutions (ResNeXt, SE-ResNeXt) compute wrong values at every group width measured
(4 to 64 channels per group; outputs off by 0.5-1.1x their size on one grouped layer), while
depthwise convolutions (MobileNet) are right; grouped convolutions stay float32 (with
their fused BatchNorm/ReLU), and the int8 graph dequantizes around them.

**int8: DenseNet's concatenations, made quantizable (``plain_concats``).**  The 5-D detour
of ``symbols.densenet.concat_features`` (there for the training backward) is no operator
the int8 flow quantizes, so every dense layer's BatchNorm and ReLU, which come before its
convolution and cannot fold into it, ran in float32 on the plain layout between a
dequantize, reorders and a quantize: DenseNet-BC-100's int8 graph was 1.01x the fused
float32 one at batch 64 (42% of its oneDNN time in ``ncsp_bnorm``, 36% in reorders).  The
int8 flow gets the 4-D Concat, which it quantizes with the BatchNorm and ReLU after it:
1.99x the fused float32 graph at batch 64, top-1 as before (bench/inference.py, Xeon).
Each dense layer concatenates all the maps before it; the rewrite joins the previous
layer's concatenation and the newest map instead (same values), so that oneDNN's int8
concatenation, which copies each piece pixel by pixel in the channels-last layout, copies
two pieces per pixel instead of up to 17: int8 went from 1.99x to 2.92x the fused graph.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mxcnn.graph.symbol_json import concat_detour_pieces, load_rewritten, symbol_graph

if TYPE_CHECKING:
    import mxnet as mx

__all__ = [
    "FUSION_BACKEND",
    "QUANTIZE_BACKEND",
    "CUT_OP",
    "fusion_escapes",
    "guard_fusion",
    "guard_int8_activations",
    "grouped_convolutions",
    "int8_excluded_layers",
    "fused_node_names",
    "is_partitioned",
    "plain_concats",
]

FUSION_BACKEND = "MKLDNN"
QUANTIZE_BACKEND = "MKLDNN_QUANTIZE"
#: The barrier: an identity in the forward pass that the oneDNN backends neither fuse nor drop.
CUT_OP = "BlockGrad"
CUT_SUFFIX = "_fusion_cut"
#: Rounds of cutting before giving up (one suffices for every registered family).
_MAX_ROUNDS = 4


def _subgraph_nodes(partitioned: dict[str, Any]) -> list[tuple[str, list[str], set[str]]]:
    """``[(fused node name, names of the operators inside, names of its output operators)]``."""
    fused = []
    for node in partitioned["nodes"]:
        for sub in node.get("subgraphs") or []:
            inside = [n["name"] for n in sub["nodes"] if n["op"] != "null"]
            last = {sub["nodes"][head[0]]["name"] for head in sub["heads"]}
            fused.append((node["name"], inside, last))
    return fused


def _consumers(graph: dict[str, Any]) -> dict[str, set[str]]:
    nodes = graph["nodes"]
    users: dict[str, set[str]] = {}
    for node in nodes:
        for source in node["inputs"]:
            users.setdefault(nodes[source[0]]["name"], set()).add(node["name"])
    return users


def fusion_escapes(sym: mx.sym.Symbol, backend: str = FUSION_BACKEND) -> list[tuple[str, list[str]]]:
    """``[(operator, [outside consumers])]``: operators that ``backend`` folds into a fused
    node although their output is also read outside that node (or is a graph output).
    Empty when the partitioned graph computes what ``sym`` does."""
    graph = symbol_graph(sym)
    users = _consumers(graph)
    heads = {graph["nodes"][head[0]]["name"] for head in graph["heads"]}
    partitioned = json.loads(sym.get_backend_symbol(backend).tojson())
    escapes = []
    for _, inside, last in _subgraph_nodes(partitioned):
        for name in inside:
            outside = sorted(users.get(name, set()) - set(inside))
            if name not in last and (outside or name in heads):
                escapes.append((name, outside))
    return escapes


def _cut(sym: mx.sym.Symbol, escapes: list[tuple[str, list[str]]]) -> mx.sym.Symbol:
    """``sym`` with a ``CUT_OP`` between each escaping operator and its consumers that are
    not among its outside consumers (those inside the fused node)."""
    graph = symbol_graph(sym)
    nodes, outside = graph["nodes"], dict(escapes)
    new_nodes: list[dict[str, Any]] = []
    new_id: dict[int, int] = {}
    cuts: dict[tuple[int, int], int] = {}
    for index, node in enumerate(nodes):
        node = dict(node)
        inputs = []
        for ref in node["inputs"]:
            source = nodes[ref[0]]["name"]
            if source in outside and node["name"] not in outside[source]:
                key = (ref[0], ref[1])
                if key not in cuts:
                    new_nodes.append(
                        {"op": CUT_OP, "name": source + CUT_SUFFIX, "inputs": [[new_id[ref[0]], ref[1], 0]]}
                    )
                    cuts[key] = len(new_nodes) - 1
                inputs.append([cuts[key], 0, 0])
            else:
                inputs.append([new_id[ref[0]]] + list(ref[1:]))
        node["inputs"] = inputs
        new_nodes.append(node)
        new_id[index] = len(new_nodes) - 1
    rewritten = {
        "nodes": new_nodes,
        "arg_nodes": [new_id[i] for i in graph["arg_nodes"]],
        "heads": [[new_id[h[0]]] + list(h[1:]) for h in graph["heads"]],
        "attrs": graph.get("attrs", {}),
    }
    return load_rewritten(rewritten, sym, "fusion guard")


def guard_fusion(
    sym: mx.sym.Symbol, backends: tuple[str, ...] = (FUSION_BACKEND, QUANTIZE_BACKEND)
) -> tuple[mx.sym.Symbol, list[str]]:
    """``(symbol, cut operators)``: ``sym`` with every fusion escape of ``backends`` cut
    (module docstring); ``sym`` itself and ``[]`` when there is none.  Same arguments,
    auxiliary states and outputs; the same values unfused."""
    cut: list[str] = []
    for _ in range(_MAX_ROUNDS):
        escapes = [e for backend in backends for e in fusion_escapes(sym, backend)]
        if not escapes:
            return sym, cut
        merged: dict[str, set[str]] = {}
        for name, outside in escapes:
            merged.setdefault(name, set()).update(outside)
        sym = _cut(sym, [(name, sorted(users)) for name, users in merged.items()])
        cut.extend(sorted(merged))
    raise AssertionError(
        "oneDNN fusion still folds operators read elsewhere after %d cuts "
        "(%s); this is a bug" % (_MAX_ROUNDS, ", ".join(cut))
    )


#: LeakyReLU kinds that do not commute with a positive scale (module docstring)
_SCALE_SENSITIVE = ("gelu", "elu", "selu")


def _nonlinear_activation(node: dict[str, Any]) -> bool:
    """Whether ``node`` is a LeakyReLU activation the int8 convolution would compute on its
    requantized output (GELU, ELU, SELU: not ReLU, leaky or parametric ReLU)."""
    return node["op"] == "LeakyReLU" and node.get("attrs", {}).get("act_type", "") in _SCALE_SENSITIVE


def guard_int8_activations(sym: mx.sym.Symbol) -> tuple[mx.sym.Symbol, list[str]]:
    """``(symbol, cut operators)``: ``sym`` with a ``CUT_OP`` between every Convolution or
    BatchNorm and a GELU/ELU/SELU it feeds (module docstring), so that the int8 partitioning
    cannot fuse that activation into a quantized convolution."""
    graph = symbol_graph(sym)
    nodes, users = graph["nodes"], _consumers(graph)
    cuts: dict[str, set[str]] = {}
    for node in nodes:
        if not _nonlinear_activation(node):
            continue
        source = nodes[node["inputs"][0][0]]
        if source["op"] in ("Convolution", "BatchNorm"):
            cuts.setdefault(source["name"], set()).add(node["name"])
    if not cuts:
        return sym, []
    return _cut(sym, [(name, sorted(users[name] - act)) for name, act in cuts.items()]), sorted(cuts)


def grouped_convolutions(sym: mx.sym.Symbol, **shapes: tuple[int, ...]) -> list[str]:
    """Names of the grouped Convolutions (``num_group > 1``) that are not depthwise (one
    input and one output channel per group); ``shapes`` (``data=(N, C, H, W)``) give the
    input channels through the weights' inferred shapes."""
    graph = symbol_graph(sym)
    weights = dict(zip(sym.list_arguments(), sym.infer_shape_partial(**shapes)[0]))
    nodes, names = graph["nodes"], []
    for node in nodes:
        attrs = node.get("attrs", {})
        if node["op"] != "Convolution" or int(attrs.get("num_group", "1")) == 1:
            continue
        groups, filters = int(attrs["num_group"]), int(attrs.get("num_filter", "0"))
        weight = weights.get(nodes[node["inputs"][1][0]]["name"]) if len(node["inputs"]) > 1 else None
        depthwise = groups == filters and bool(weight) and len(weight) > 1 and weight[1] == 1
        if not depthwise:
            names.append(node["name"])
    return names


def int8_excluded_layers(sym: mx.sym.Symbol, **shapes: tuple[int, ...]) -> list[str]:
    """Layers of ``sym`` that must stay float32 in the int8 graph (module docstring)."""
    return grouped_convolutions(sym, **shapes)


def fused_node_names(partitioned: mx.sym.Symbol, layers: list[str]) -> tuple[list[str], list[str]]:
    """``(fused node names, unknown layers)``: the nodes of a partitioned graph that hold
    (or are) each of ``layers``, which are names of the unpartitioned graph."""
    graph = json.loads(partitioned.tojson())
    owner = {}
    for node in graph["nodes"]:
        owner[node["name"]] = node["name"]
        for sub in node.get("subgraphs") or []:
            for inner in sub["nodes"]:
                if inner["op"] != "null":
                    owner[inner["name"]] = node["name"]
    found = sorted({owner[name] for name in layers if name in owner})
    return found, [name for name in layers if name not in owner]


def is_partitioned(sym: mx.sym.Symbol) -> bool:
    """True for a graph a oneDNN backend already partitioned (an int8 checkpoint's)."""
    return any(
        node["op"].startswith(("_sg_mkldnn", "_contrib_quantize", "_contrib_dequantize"))
        for node in symbol_graph(sym)["nodes"]
    )


def plain_concats(sym: mx.sym.Symbol) -> tuple[mx.sym.Symbol, list[str]]:
    """``(symbol, rewritten names)``: every 5-D channel concatenation of DenseNet
    (``symbols.densenet.concat_features``) as one 4-D ``Concat`` of the same name, which
    reads an earlier such concatenation of its leading pieces where there is one.

    The detour keeps training off oneDNN's Concat backward; an inference graph has no
    backward, and on the detour the int8 flow can quantize neither the concatenation nor
    the BatchNorm and ReLU after it (the views are no quantizable operators), so each dense
    layer ran its pre-activation in float32 between reorders.  Same values, same interface.
    """
    graph = symbol_graph(sym)
    names, joined = [], {}  # joined: the pieces of each rewritten concatenation -> its id
    for index, node in enumerate(graph["nodes"]):
        parts = concat_detour_pieces(graph["nodes"], node)
        if parts is not None:
            inputs = _after_longest_prefix(parts, joined)
            node.update(op="Concat", attrs={"dim": "1", "num_args": str(len(inputs))},
                        inputs=inputs)
            joined[tuple(tuple(ref) for ref in parts)] = index
            names.append(node["name"])
    return (load_rewritten(graph, sym, "plain concatenation"), names) if names else (sym, [])


def _after_longest_prefix(parts, joined):
    """``parts`` with its longest leading run that ``joined`` holds replaced by that node."""
    for end in range(len(parts) - 1, 1, -1):
        earlier = joined.get(tuple(tuple(ref) for ref in parts[:end]))
        if earlier is not None:
            return [[earlier, 0, 0]] + list(parts[end:])
    return list(parts)
