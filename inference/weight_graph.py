"""Our side of a weight conversion: the symbol a source architecture becomes, its parameter
shapes, its logits, and whether a checkpoint's graph is the one an exporter expects.

:func:`build_symbol` is ``symbols.get_symbol`` for the :class:`~.weight_maps.Arch`, with the
family's BatchNorm epsilon on every BatchNorm and its node ``edits`` applied to the JSON
graph (an attribute set to the source's value, or ``op: _copy`` for an operator the source
does not have).  The result is an ordinary symbol: checkpoints of it score, export to ONNX
and open in the inspector like any other.
"""
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mxcnn import common
from mxcnn.graph.symbol_json import check_interface
from mxcnn.inference.weight_maps import Arch

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["build_symbol", "edit_graph", "param_shapes", "logits_symbol", "bn_epsilons",
           "graph_difference", "MXNET_BN_EPS"]

#: MXNet's BatchNorm epsilon when the attribute is absent.
MXNET_BN_EPS = 1e-3
#: Attributes that do not change an inference output (or that a conversion maps itself: eps).
_NEUTRAL_ATTRS = ("eps", "momentum", "workspace", "cudnn_tune", "cudnn_off", "mirror_stage")


def build_symbol(arch: Arch, num_classes: int, image_shape: Sequence[int]) -> "mx.sym.Symbol":
    """Our training symbol (``SoftmaxOutput`` head) for ``arch`` with the source's details."""
    from mxcnn import symbols
    sym = symbols.get_symbol(arch.network, num_classes=num_classes, image_shape=image_shape,
                             **arch.kwargs)
    return edit_graph(sym, arch.family.edits, arch.family.bn_eps)


def edit_graph(sym: "mx.sym.Symbol", edits: Mapping[str, dict],
               bn_eps: float | None = None) -> "mx.sym.Symbol":
    """``sym`` with ``edits`` applied and every BatchNorm's ``eps`` set to ``bn_eps`` (if given).

    ``edits`` maps a regular expression over node names to a change: ``{attr: value, ...}``;
    ``{"op": name}`` (the operator, attributes cleared); or ``{"input": template}`` (the node
    reads what the node named by ``template``, the expression's ``match.expand``, reads)."""
    import mxnet as mx
    graph = json.loads(sym.tojson())
    named = {node["name"]: node for node in graph["nodes"]}
    for pattern, change in edits.items():
        matched = [(n, m) for n, m in ((n, re.fullmatch(pattern, n)) for n in named) if m]
        if not matched:
            raise AssertionError("weight map edits nodes %r, which the symbol lacks" % pattern)
        for name, match in matched:
            _edit_node(named, named[name], match, change)
    if bn_eps is not None:
        for node in graph["nodes"]:
            if node["op"] == "BatchNorm":
                node.setdefault("attrs", {})["eps"] = repr(float(bn_eps))
    return check_interface(sym, mx.sym.load_json(json.dumps(graph)), "weight-map edit")


def _edit_node(named, node, match, change):
    if "op" in change:
        node["op"], node["attrs"] = change["op"], {}
    elif "input" in change:
        node["inputs"][0] = list(named[match.expand(change["input"])]["inputs"][0])
    else:
        node.setdefault("attrs", {}).update(change)


def param_shapes(sym: "mx.sym.Symbol", image_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every parameter and auxiliary state for one (C, H, W) image."""
    shape = (1,) + tuple(image_shape)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=shape)
    shapes = {name: tuple(s) for name, s in zip(sym.list_arguments(), arg_shapes)
              if name != "data" and not name.endswith("label")}
    shapes.update(zip(sym.list_auxiliary_states(), (tuple(s) for s in aux_shapes)))
    return shapes


def logits_symbol(sym: "mx.sym.Symbol") -> "mx.sym.Symbol":
    """The main output's logits: what its ``SoftmaxOutput`` head reads (output 0)."""
    main = sym[0] if len(sym.list_outputs()) > 1 else sym
    graph = json.loads(main.tojson())
    if graph["nodes"][graph["heads"][0][0]]["op"] in ("SoftmaxOutput", "softmax", "SoftmaxActivation"):
        return main.get_children()[0]
    return main


def bn_epsilons(sym: "mx.sym.Symbol") -> dict[str, float]:
    """``{BatchNorm node name: eps}`` of ``sym``."""
    graph = json.loads(sym.tojson())
    return {node["name"]: float(node.get("attrs", {}).get("eps", MXNET_BN_EPS))
            for node in graph["nodes"] if node["op"] == "BatchNorm"}


def _signature(sym):
    """The operators of the logits graph in order: (name, op, {attributes that change outputs,
    "inputs": their sources}).  A source is a variable's name or an operator's position, so
    MXNet's generated names (``zeros_like3``) do not count; Dropout (an identity at inference)
    is left out and looked through."""
    nodes = json.loads(logits_symbol(sym).tojson())["nodes"]
    position = {}

    def source(entry):
        while nodes[entry[0]]["op"] == "Dropout":
            entry = nodes[entry[0]]["inputs"][0]
        node = nodes[entry[0]]
        return node["name"] if node["op"] == "null" else "#%d:%d" % (position[entry[0]], entry[1])
    out = []
    for index, node in enumerate(nodes):
        if node["op"] in ("null", "Dropout"):
            continue
        position[index] = len(out)
        attrs = {k: v for k, v in node.get("attrs", {}).items()
                 if k not in _NEUTRAL_ATTRS and not k.startswith("__")}
        attrs["inputs"] = ",".join(source(entry) for entry in node["inputs"])
        out.append((node["name"], node["op"], attrs))
    return out


def graph_difference(ours: "mx.sym.Symbol", reference: "mx.sym.Symbol") -> str | None:
    """None when ``ours`` computes the logits as ``reference`` does (BatchNorm eps aside), else
    words naming the first difference ("node pool4: kernel (3, 3) where it has (2, 2)")."""
    mine, theirs = _signature(ours), _signature(reference)
    for (name, op, attrs), (_, ref_op, ref_attrs) in zip(mine, theirs):
        if op != ref_op:
            return "node %s is %s where it has %s" % (name, op, ref_op)
        for key in sorted(set(attrs) | set(ref_attrs)):
            if attrs.get(key) != ref_attrs.get(key):
                return ("node %s: %s %s where it has %s"
                        % (name, key, attrs.get(key, "unset"), ref_attrs.get(key, "unset")))
    if len(mine) != len(theirs):
        longer = mine if len(mine) > len(theirs) else theirs
        extra = longer[min(len(mine), len(theirs))]
        return ("%d operators where it has %d (first unmatched: %s %s)"
                % (len(mine), len(theirs), extra[1], extra[0]))
    return None


def check_image_shape(image_shape: Sequence[int] | str) -> tuple[int, int, int]:
    """``image_shape`` as a (C, H, W) tuple; UserError for anything else."""
    from mxcnn.symbols.layers import as_image_shape
    try:
        return as_image_shape(image_shape)
    except common.UserError as err:
        raise common.UserError("--image-shape: %s" % err) from None
