"""Inspect any MXNet symbol: per-layer shapes, parameters, MACs and activation memory.

What netscope, its "CNN Analyzer" fork, torchinfo and Netron show, for MXNet:

    >>> from graph.inspector import summarize
    >>> s = summarize(sym, data=(1, 3, 32, 32))
    >>> s.total_macs, s.total_params
    >>> print(s.render(group_by="stage"))

and from the command line (``mxcnn-inspect`` when installed)::

    python -m graph.inspector resnet --num-layers 20 --html resnet20.html --svg resnet20.svg
    python -m graph.inspector model-symbol.json --input-shape data=1,3,224,224 --sort-by macs

Counting rules (stated once, used everywhere):

* **MACs** are multiply-accumulates of Convolution, Deconvolution, FullyConnected and
  (batch_)dot, for the whole batch of the given input shapes (batch 1 by default, i.e. per
  image) -- the figure papers and torchvision quote (ResNet-50 ~4.1G, VGG-16 ~15.5G).
  Biases are not counted.  Convolution: ``output elements x (C_in / groups) x kh x kw``
  (so depthwise and dilated convolutions are right); Deconvolution: ``input elements x
  (C_out / groups) x kh x kw``; FullyConnected: ``output elements x input features``.
* **Other ops** (a separate column, not in the MACs): per-element arithmetic of the rest --
  BatchNorm 2 per element (scale and shift, as at inference), activations and element-wise
  arithmetic 1 per element, Pooling one per window element per output, LRN ``nsize`` per
  element, softmax 3 per element.  Pure data movement (reshape, concat, slice, dropout at
  inference) is 0.
* **Params** are the learnable arguments (weights, biases, BN gamma/beta); BN moving
  statistics are auxiliary states, reported separately (``total_aux``).
* **Activation memory** is the bytes of each operator's outputs (float32 unless MXNet
  infers another type), with no in-place sharing: what the forward pass of training keeps.
* An operator the counter does not know is listed, counted as 0 MACs and named in one
  warning per operator type; it never stops the inspection.
"""
import argparse
import collections
import html as _html
import json
import os
import re
import sys
import warnings

import numpy as np

from .. import common

__all__ = ["InspectError", "LayerRow", "Summary", "summarize", "load_symbol", "fold_graph",
           "layout_graph", "to_dot", "write_html", "write_graphviz", "main"]

_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


class InspectError(common.UserError):
    """A symbol, shape or option the inspector cannot use; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# counting rules
# --------------------------------------------------------------------------------------------

#: operators that only move or select data: 0 MACs, 0 other ops
_DATA_MOVEMENT = {
    "Flatten", "flatten", "Reshape", "reshape", "transpose", "Concat", "concat", "SliceChannel",
    "split", "slice", "slice_axis", "slice_like", "Crop", "Dropout", "identity", "_copy",
    "BlockGrad", "stop_gradient", "zeros_like", "ones_like", "expand_dims", "squeeze", "Cast",
    "cast", "_zeros", "_ones", "Pad", "pad", "tile", "repeat", "broadcast_to", "broadcast_like",
    "reshape_like", "SwapAxis", "swapaxes", "take", "Embedding", "UpSampling", "_contrib_BilinearResize2D",
    "shape_array", "size_array", "_full", "MakeLoss", "make_loss", "where", "_arange",
}
#: other ops per output element
_PER_ELEMENT = {
    "Activation": 1, "LeakyReLU": 1, "relu": 1, "sigmoid": 1, "tanh": 1, "clip": 1,
    "hard_sigmoid": 1, "softsign": 1, "exp": 1, "log": 1, "sqrt": 1, "square": 1, "abs": 1,
    "negative": 1, "reciprocal": 1, "erf": 1,
    "elemwise_add": 1, "elemwise_sub": 1, "elemwise_mul": 1, "elemwise_div": 1,
    "_Plus": 1, "_plus": 1, "_Minus": 1, "_minus": 1, "_Mul": 1, "_mul": 1, "_Div": 1, "_div": 1,
    "_add": 1, "_sub": 1, "broadcast_add": 1, "broadcast_plus": 1, "broadcast_sub": 1,
    "broadcast_minus": 1, "broadcast_mul": 1, "broadcast_div": 1, "broadcast_maximum": 1,
    "broadcast_minimum": 1, "_maximum": 1, "_minimum": 1,
    "_plus_scalar": 1, "_minus_scalar": 1, "_rminus_scalar": 1, "_mul_scalar": 1,
    "_div_scalar": 1, "_rdiv_scalar": 1, "_power_scalar": 1, "_maximum_scalar": 1,
    "_minimum_scalar": 1,
    "BatchNorm": 2, "BatchNorm_v1": 2, "InstanceNorm": 2, "LayerNorm": 2, "GroupNorm": 2,
    "L2Normalization": 2,
    "softmax": 3, "log_softmax": 3, "SoftmaxOutput": 3, "SoftmaxActivation": 3, "Softmax": 3,
    "LinearRegressionOutput": 1, "LogisticRegressionOutput": 1,
}
#: reductions: other ops per *input* element
_PER_INPUT_ELEMENT = {"sum": 1, "mean": 1, "max": 1, "min": 1, "norm": 2, "prod": 1,
                      "_contrib_AdaptiveAvgPooling2D": 1}
_SUM_OPS = {"add_n", "ElementWiseSum"}  # (k - 1) adds per output element for k inputs
_MAC_OPS = {"Convolution", "Convolution_v1", "Deconvolution", "FullyConnected", "dot",
            "batch_dot", "_linalg_gemm2", "linalg_gemm2"}
_KNOWN_OPS = (_DATA_MOVEMENT | set(_PER_ELEMENT) | set(_PER_INPUT_ELEMENT) | _SUM_OPS
              | _MAC_OPS | {"Pooling", "Pooling_v1", "LRN"})

#: ops netscope-style graphs fold into the node that feeds them (in-place layers)
FOLDABLE_OPS = {"BatchNorm", "BatchNorm_v1", "Activation", "LeakyReLU", "relu", "sigmoid",
                "tanh", "clip", "hard_sigmoid", "Dropout", "_copy", "identity"}

_STAGE_RE = re.compile(r"(?:stage|layers?|dense_?block|transition|trans|group)_?\d+[a-z]?")
_UNIT_RE = re.compile(r"(?:unit|block|bottleneck|blk|module)_?\d+[a-z]?")


def _prod(shape):
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _parse_tuple(text):
    """MXNet stores tuple attributes as strings like '(3, 3)'."""
    if text is None:
        return ()
    return tuple(int(v) for v in re.findall(r"-?\d+", str(text)))


def _count(op, attrs, out_shapes, in_shapes, param_shapes):
    """(MACs, other ops, known) for one operator; see the module docstring for the rules."""
    out = _prod(out_shapes[0]) if out_shapes else 0
    data_in = in_shapes[0] if in_shapes else ()
    weight = param_shapes[0] if param_shapes else None
    if op in ("Convolution", "Convolution_v1"):
        if weight is None:  # weight given as an input of the graph
            weight = in_shapes[1] if len(in_shapes) > 1 else ()
        return out * _prod(weight[1:]), 0, True
    if op == "Deconvolution":
        if weight is None:
            weight = in_shapes[1] if len(in_shapes) > 1 else ()
        return _prod(data_in) * _prod(weight[1:]), 0, True
    if op == "FullyConnected":
        if weight is None:
            weight = in_shapes[1] if len(in_shapes) > 1 else ()
        return out * (weight[1] if len(weight) > 1 else 0), 0, True
    if op in ("dot", "batch_dot", "_linalg_gemm2", "linalg_gemm2"):
        a = data_in
        transpose_a = str(attrs.get("transpose_a", "False")).lower() in ("true", "1")
        k = (a[-2] if transpose_a else a[-1]) if a else 0
        if op == "dot" and a and len(a) > 2:  # dot contracts the last axis of a
            k = a[0] if transpose_a else a[-1]
        return out * k, 0, True
    if op in ("Pooling", "Pooling_v1"):
        if str(attrs.get("global_pool", "False")).lower() in ("true", "1"):
            window = _prod(data_in[2:])
        else:
            window = _prod(_parse_tuple(attrs.get("kernel")))
        return 0, out * window, True
    if op == "LRN":
        return 0, out * int(attrs.get("nsize", 5)), True
    if op in _SUM_OPS:
        return 0, out * max(0, len(in_shapes) - 1), True
    if op in _PER_INPUT_ELEMENT:
        return 0, _prod(data_in) * _PER_INPUT_ELEMENT[op], True
    if op in _PER_ELEMENT:
        return 0, out * _PER_ELEMENT[op], True
    if op in _DATA_MOVEMENT:
        return 0, 0, True
    return 0, 0, False


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------

class LayerRow(object):
    """One operator of the symbol with its counted figures (all ints, shapes are tuples)."""

    __slots__ = ("index", "name", "op", "attrs", "inputs", "output_shapes", "params",
                 "param_shapes", "aux", "macs", "ops", "activation_bytes", "stage", "unit",
                 "counted")

    def __init__(self, **fields):
        for key in self.__slots__:
            setattr(self, key, fields.get(key))

    @property
    def output_shape(self):
        return self.output_shapes[0] if self.output_shapes else ()

    def as_dict(self):
        return {key: getattr(self, key) for key in self.__slots__}

    def __repr__(self):
        return "LayerRow(%s %s %s params=%d macs=%d)" % (self.name, self.op, self.output_shape,
                                                          self.params, self.macs)


#: text-table columns: (key for --sort-by, header, LayerRow attribute)
COLUMNS = (("name", "Layer", "name"), ("op", "Operator", "op"),
           ("shape", "Output shape", "output_shape"), ("params", "Params", "params"),
           ("macs", "MACs", "macs"), ("ops", "Other ops", "ops"),
           ("memory", "Act. memory", "activation_bytes"))
SORT_KEYS = tuple(c[0] for c in COLUMNS)
GROUP_BY = ("none", "stage", "unit")


class Summary(object):
    """Per-operator rows of a symbol plus totals; ``render()`` gives the text table.

    ``rows`` hold operators only (inputs and parameters are folded into their consumers);
    ``inputs`` maps each data input to its shape; ``edges`` lists (producer row or input
    name, output index, consumer row index) for graph drawing.
    """

    def __init__(self, rows, inputs, edges, heads, warnings_, name=None):
        self.rows = rows
        self.inputs = inputs
        self.edges = edges
        self.heads = heads
        self.warnings = warnings_
        self.name = name or "symbol"

    total_params = property(lambda self: sum(r.params for r in self.rows))
    total_aux = property(lambda self: sum(r.aux for r in self.rows))
    total_macs = property(lambda self: sum(r.macs for r in self.rows))
    total_ops = property(lambda self: sum(r.ops for r in self.rows))
    total_activation_bytes = property(lambda self: sum(r.activation_bytes for r in self.rows))

    @property
    def batch_size(self):
        first = next(iter(self.inputs.values()), ())
        return first[0] if first else 1

    def grouped(self, group_by="stage"):
        """Rows merged per stage (or stage/unit): one aggregate ``LayerRow`` per group."""
        if group_by not in GROUP_BY:
            raise InspectError("group_by must be one of %s, got %r" % (", ".join(GROUP_BY), group_by))
        if group_by == "none":
            return list(self.rows)
        groups = collections.OrderedDict()
        for row in self.rows:
            key = row.stage if group_by == "stage" else (
                row.stage if row.unit == row.stage else row.stage + "/" + row.unit)
            groups.setdefault(key, []).append(row)
        merged = []
        for index, (key, rows) in enumerate(groups.items()):
            merged.append(LayerRow(
                index=index, name=key, op="%d layer%s" % (len(rows), "" if len(rows) == 1 else "s"),
                attrs={}, inputs=[], output_shapes=[rows[-1].output_shape],
                params=sum(r.params for r in rows), param_shapes={}, aux=sum(r.aux for r in rows),
                macs=sum(r.macs for r in rows), ops=sum(r.ops for r in rows),
                activation_bytes=sum(r.activation_bytes for r in rows), stage=rows[0].stage,
                unit=rows[0].unit, counted=all(r.counted for r in rows)))
        return merged

    def render(self, group_by="none", sort_by=None, max_name=48):
        """The text table (torchinfo-like) with totals; ``sort_by`` is one of ``SORT_KEYS``."""
        rows = self.grouped(group_by)
        if sort_by is not None:
            if sort_by not in SORT_KEYS:
                raise InspectError("sort_by must be one of %s, got %r" % (", ".join(SORT_KEYS), sort_by))
            attr = dict((c[0], c[2]) for c in COLUMNS)[sort_by]
            numeric = sort_by in ("params", "macs", "ops", "memory")
            key = (lambda r: getattr(r, attr)) if numeric else (lambda r: str(getattr(r, attr)))
            rows = sorted(rows, key=key, reverse=numeric)
        table = [[h for _, h, _ in COLUMNS]]
        for r in rows:
            name = r.name if len(r.name) <= max_name else r.name[:max_name - 1] + "~"
            table.append([name, r.op + ("" if r.counted else " (?)"), _shape_text(r.output_shape),
                          "{:,}".format(r.params), "{:,}".format(r.macs), "{:,}".format(r.ops),
                          human_bytes(r.activation_bytes)])
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        right = {3, 4, 5, 6}

        def fmt(line):
            return "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        rule = "-" * len(fmt(table[0]))
        out = [rule, fmt(table[0]), rule] + [fmt(line) for line in table[1:]] + [rule]
        inputs = ", ".join("%s=%s" % (k, _shape_text(v)) for k, v in self.inputs.items())
        out += [
            "Input: %s" % inputs,
            "Layers: %d operators" % len(self.rows),
            "Params: {:,} learnable ({}), {:,} auxiliary (BN statistics)".format(
                self.total_params, human_count(self.total_params), self.total_aux),
            "MACs: {:,} ({}) conv/deconv/FC/dot for batch {}".format(
                self.total_macs, human_count(self.total_macs), self.batch_size),
            "Other ops: {:,} ({}) BN/activation/pooling/element-wise".format(
                self.total_ops, human_count(self.total_ops)),
            "Activation memory: %s (forward outputs, float32, no sharing)"
            % human_bytes(self.total_activation_bytes),
            "Parameter memory: %s" % human_bytes(4 * (self.total_params + self.total_aux)),
        ]
        uncounted = sorted({r.op for r in self.rows if not r.counted})
        if uncounted:
            out.append("Not counted (0 MACs, marked (?)): %s" % ", ".join(uncounted))
        out.append(rule)
        return "\n".join(out)

    def __str__(self):
        return self.render()

    def to_json_dict(self):
        """Plain-JSON form (rows, inputs, totals) for tools and the HTML page."""
        return {
            "name": self.name,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "totals": {"params": self.total_params, "aux": self.total_aux, "macs": self.total_macs,
                       "ops": self.total_ops, "activation_bytes": self.total_activation_bytes},
            "rows": [{"name": r.name, "op": r.op, "output_shapes": [list(s) for s in r.output_shapes],
                      "params": r.params, "aux": r.aux, "macs": r.macs, "ops": r.ops,
                      "activation_bytes": r.activation_bytes, "stage": r.stage, "unit": r.unit,
                      "counted": r.counted, "attrs": r.attrs,
                      "param_shapes": {k: list(v) for k, v in r.param_shapes.items()}}
                     for r in self.rows],
        }


def _shape_text(shape):
    return "x".join(str(v) for v in shape) if shape else "-"


def human_count(value):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return "%.2f%s" % (value / scale, unit)
    return str(value)


def human_bytes(value):
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if value >= scale:
            return "%.2f %s" % (value / scale, unit)
    return "%d B" % value


def _group_names(name):
    """(stage, unit) from a layer name, e.g. 'stage2_unit3_conv1' -> ('stage2', 'unit3')."""
    match = _STAGE_RE.search(name)
    stage = match.group(0) if match else re.split(r"[_.]", name, maxsplit=1)[0] or name
    rest = name[match.end():] if match else name[len(stage):]
    unit = _UNIT_RE.search(rest)
    return stage, (unit.group(0) if unit else stage)


def _assign_groups(rows):
    """Stage/unit of each row; layers outside any stage become 'stem' (before) or 'head' (after).

    A prefix shared by every name (Gluon's 'resnetv10_') is ignored; unstaged layers between
    two stages (a DenseNet transition) join the stage before them.  Names without any stage
    pattern (VGG's conv1_1, Inception's in3a_...) group by their first name token.
    """
    if not rows:
        return
    prefix = os.path.commonprefix([r.name for r in rows])
    prefix = prefix[:prefix.rfind("_") + 1] if len(rows) > 1 else ""
    staged = [bool(_STAGE_RE.search(r.name[len(prefix):])) for r in rows]
    first = staged.index(True) if any(staged) else None
    last = len(staged) - 1 - staged[::-1].index(True) if any(staged) else None
    previous = None
    for i, row in enumerate(rows):
        stage, unit = _group_names(row.name[len(prefix):])
        if first is not None and not staged[i]:
            if i < first or i > last:
                stage = unit = "stem" if i < first else "head"
            else:  # e.g. a DenseNet transition: part of the stage it closes
                stage = previous
        row.stage, row.unit = stage, unit
        previous = stage


def _is_label(name):
    return name.endswith("label")


def summarize(sym, **input_shapes):
    """Count every operator of ``sym`` for the given input shapes.

    ``input_shapes`` maps each data input to a full shape including the batch, e.g.
    ``summarize(sym, data=(1, 3, 224, 224))``; labels (``*_label``) are inferred.
    Returns a :class:`Summary`; raises :class:`InspectError` when shapes are missing or
    inconsistent.  Unknown operators give one ``UserWarning`` per operator type.
    """
    import mxnet as mx
    if not isinstance(sym, mx.sym.Symbol):
        raise InspectError("summarize() needs an mx.sym.Symbol, got %s" % type(sym).__name__)
    shapes = {}
    for key, value in input_shapes.items():
        try:
            shapes[key] = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise InspectError("input shape for %r must be a tuple of ints, got %r" % (key, value))
    arguments = sym.list_arguments()
    unknown_inputs = sorted(set(shapes) - set(arguments))
    if unknown_inputs:
        raise InspectError("the symbol has no input named %s; its arguments are: %s"
                           % (", ".join(unknown_inputs), _short_list(arguments)))
    internals = sym.get_internals()
    try:
        arg_shapes, out_shapes, aux_shapes = internals.infer_shape_partial(**shapes)
    except mx.base.MXNetError as err:
        raise InspectError("shape inference failed for inputs %s: %s"
                           % (shapes, _first_line(err)))
    arg_shape = dict(zip(internals.list_arguments(), arg_shapes))
    missing = [n for n in internals.list_arguments()
               if not arg_shape[n] or 0 in arg_shape[n]]
    if missing:
        inputs = [n for n in missing if not _is_label(n)]
        raise InspectError(
            "cannot infer shapes: no shape for input(s) %s; give each as "
            "--input-shape NAME=N,C,H,W (e.g. %s=1,3,224,224)"
            % (", ".join(inputs or missing), (inputs or missing)[0]))
    try:
        out_types = internals.infer_type(**{k: np.float32 for k in shapes})[1]
    except mx.base.MXNetError:
        out_types = None
    aux_shape = dict(zip(internals.list_auxiliary_states(), aux_shapes))

    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    # internals' outputs are the visible outputs of every node in graph order
    entry_shape, entry_bytes, seen = {}, {}, collections.Counter()
    for k in range(len(out_shapes)):
        node_name = internals[k].name
        j = seen[node_name]
        seen[node_name] += 1
        entry_shape[(node_name, j)] = tuple(out_shapes[k])
        itemsize = np.dtype(out_types[k]).itemsize if out_types and out_types[k] else 4
        entry_bytes[(node_name, j)] = _prod(out_shapes[k]) * itemsize

    rows, edges, by_index, warned = [], [], {}, {}
    consumed = set()
    for i, node in enumerate(nodes):
        if node["op"] == "null":
            continue
        name, op = node["name"], node["op"]
        attrs = dict(node.get("attrs", node.get("param", {})) or {})
        params = aux = 0
        param_shapes, in_shapes, data_inputs = {}, [], []
        for src, out_index, _ in node["inputs"]:
            src_node = nodes[src]
            src_name = src_node["name"]
            if src_node["op"] == "null":
                if src_name in shapes or _is_label(src_name):
                    in_shapes.append(arg_shape.get(src_name, ()))
                    if src_name in shapes:
                        edges.append((src_name, 0, len(rows)))
                    continue
                shape = arg_shape.get(src_name, aux_shape.get(src_name, ()))
                param_shapes[src_name] = shape
                if src_name not in consumed:  # shared weights count once
                    consumed.add(src_name)
                    if src_name in aux_shape:
                        aux += _prod(shape)
                    else:
                        params += _prod(shape)
            else:
                in_shapes.append(entry_shape.get((src_name, out_index), ()))
                data_inputs.append(src_name)
                edges.append((by_index[src], out_index, len(rows)))
        outs = [entry_shape[(name, j)] for j in range(seen[name])] or [()]
        learnable = [s for n, s in param_shapes.items() if n not in aux_shape]
        macs, ops, known = _count(op, attrs, outs, in_shapes, learnable)
        if not known and op not in warned:
            warned[op] = name
        stage, unit = _group_names(name)
        by_index[i] = len(rows)
        rows.append(LayerRow(index=len(rows), name=name, op=op, attrs=attrs, inputs=data_inputs,
                             output_shapes=outs, params=params, param_shapes=param_shapes,
                             aux=aux, macs=int(macs), ops=int(ops),
                             activation_bytes=sum(entry_bytes[(name, j)] for j in range(seen[name])),
                             stage=stage, unit=unit, counted=known))
    messages = []
    for op, first in warned.items():
        message = ("operator %s (first at %s) is not known to the MAC counter: counted as 0 MACs"
                   % (op, first))
        messages.append(message)
        warnings.warn(message, stacklevel=2)
    _assign_groups(rows)
    heads = [(by_index.get(h[0], nodes[h[0]]["name"]), h[1]) for h in graph["heads"]]
    data_inputs = collections.OrderedDict((n, arg_shape[n]) for n in arguments if n in shapes)
    return Summary(rows, data_inputs, edges, heads, messages)


def _short_list(names, limit=8):
    names = list(names)
    return ", ".join(names[:limit]) + (" ... (%d more)" % (len(names) - limit) if len(names) > limit else "")


def _first_line(err):
    lines = [l.strip() for l in str(err).splitlines() if l.strip()]
    useful = [l for l in lines if "Error in operator" in l or "Check failed" in l or "shape" in l.lower()]
    return (useful or lines or ["unknown MXNet error"])[0][:400]


# --------------------------------------------------------------------------------------------
# loading symbols
# --------------------------------------------------------------------------------------------

def load_symbol(source, num_layers=None, num_classes=10, image_shape=(3, 32, 32), options=None):
    """An ``mx.sym.Symbol`` from a registered network name or a symbol JSON file path."""
    import mxnet as mx
    if source.endswith(".json") or os.path.sep in source or os.path.isfile(source):
        if not os.path.isfile(source):
            raise InspectError("no such symbol file: %s" % source)
        try:
            with open(source) as f:
                graph = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise InspectError("%s is not JSON (%s); expected an MXNet prefix-symbol.json" % (source, err))
        if not (isinstance(graph, dict) and isinstance(graph.get("nodes"), list)
                and "heads" in graph):
            raise InspectError("%s is JSON but not an MXNet symbol (no 'nodes'/'heads'); expected "
                               "a file written by Symbol.save or HybridBlock.export" % source)
        try:
            return mx.sym.load(source)
        except mx.base.MXNetError as err:
            raise InspectError("MXNet cannot load %s as a symbol: %s" % (source, _first_line(err)))
    get_symbol = common.sibling("symbols").get_symbol
    try:
        return get_symbol(source, num_classes=num_classes, num_layers=num_layers,
                          image_shape=image_shape, **(options or {}))
    except ImportError as err:
        raise InspectError("network %r is registered but its module cannot be imported (%s)"
                           % (source, err))
    except (ValueError, TypeError) as err:
        raise InspectError(str(err))


# --------------------------------------------------------------------------------------------
# netscope-style graph: folding, layout, Graphviz
# --------------------------------------------------------------------------------------------

def _describe(row):
    """A short operator description: 'Conv 3x3/2 64', 'Pool max 3x3/2', 'FC 1000'."""
    a = row.attrs
    kernel = "x".join(str(v) for v in _parse_tuple(a.get("kernel")))
    stride = _parse_tuple(a.get("stride"))
    stride_text = "/%d" % stride[0] if stride and max(stride) > 1 else ""
    if row.op in ("Convolution", "Convolution_v1", "Deconvolution"):
        groups = int(a.get("num_group", 1))
        dilate = _parse_tuple(a.get("dilate"))
        extra = (" g%d" % groups if groups > 1 else "") + (" d%d" % dilate[0] if dilate and max(dilate) > 1 else "")
        short = "Conv" if row.op != "Deconvolution" else "Deconv"
        return "%s %s%s, %s%s" % (short, kernel, stride_text, a.get("num_filter", "?"), extra)
    if row.op in ("Pooling", "Pooling_v1"):
        if str(a.get("global_pool", "False")).lower() in ("true", "1"):
            return "Pool %s global" % a.get("pool_type", "max")
        return "Pool %s %s%s" % (a.get("pool_type", "max"), kernel, stride_text)
    if row.op == "FullyConnected":
        return "FC %s" % a.get("num_hidden", "?")
    if row.op == "Activation":
        return a.get("act_type", "act")
    if row.op == "LeakyReLU":
        return a.get("act_type", "leaky")
    if row.op in ("BatchNorm", "BatchNorm_v1"):
        return "BN"
    return row.op


def fold_graph(summary):
    """Netscope-style graph: conv -> BN -> activation chains folded into one node.

    An in-place-like operator (``FOLDABLE_OPS``) joins the node of its producer when it is
    that producer's only consumer.  Returns ``(nodes, edges)``: nodes are dicts with
    ``rows`` (indices into ``summary.rows``), ``title``, ``label``, ``shape``; input
    variables are nodes too; edges are ``(from, to, shape)`` between node ids.
    """
    rows = summary.rows
    consumers = collections.Counter()
    for src, _, dst in summary.edges:
        consumers[src] += 1
    for head, _ in summary.heads:
        consumers[head] += 1
    nodes, node_of = [], {}
    for name, shape in summary.inputs.items():
        node_of[name] = len(nodes)
        nodes.append({"id": len(nodes), "rows": [], "title": name, "label": "Input",
                      "shape": _shape_text(shape), "input": True})
    incoming = collections.defaultdict(list)
    for src, out_index, dst in summary.edges:
        incoming[dst].append((src, out_index))
    for row in rows:
        sources = incoming[row.index]
        op_sources = [s for s, _ in sources if isinstance(s, int)]
        if (row.op in FOLDABLE_OPS and len(op_sources) == 1 and len(sources) == 1
                and consumers[op_sources[0]] == 1):
            node = nodes[node_of[op_sources[0]]]
            node["rows"].append(row.index)
            node_of[row.index] = node["id"]
            continue
        node_of[row.index] = len(nodes)
        nodes.append({"id": len(nodes), "rows": [row.index], "title": row.name, "input": False})
    for node in nodes:
        if node["rows"]:
            parts = [_describe(rows[i]) for i in node["rows"]]
            node["label"] = " + ".join(parts)
            node["shape"] = _shape_text(rows[node["rows"][-1]].output_shape)
    edges, seen = [], set()
    for src, out_index, dst in summary.edges:
        a, b = node_of[src], node_of[dst]
        if a == b or (a, b) in seen:
            continue
        seen.add((a, b))
        shape = summary.inputs[src] if not isinstance(src, int) else rows[src].output_shapes[
            min(out_index, len(rows[src].output_shapes) - 1)]
        edges.append((a, b, _shape_text(shape)))
    return nodes, edges


NODE_W, NODE_H, DUMMY_W, GAP_X, GAP_Y = 210, 46, 16, 34, 40


def layout_graph(nodes, edges, sweeps=4):
    """Layered (Sugiyama-style) top-down layout in pure Python.

    Layers by longest path, long edges split by dummy points, crossings reduced by
    barycentre sweeps, x placed by neighbour averages with minimum spacing.  Sets
    ``x``/``y`` (centre) and ``w``/``h`` on each node; returns edge polylines
    ``[(from, to, shape, [x0, y0, x1, y1, ...])]`` and the bounding box (w, h).
    """
    n = len(nodes)
    succ = collections.defaultdict(list)
    for a, b, _ in edges:
        succ[a].append(b)
    layer = [0] * n
    for a in range(n):  # node ids are in topological order
        for b in succ[a]:
            layer[b] = max(layer[b], layer[a] + 1)
    # chains of virtual points for edges spanning several layers
    vlayer, vwidth, chains = list(layer), [NODE_W] * n, []
    for a, b, shape in edges:
        chain = [a]
        for l in range(layer[a] + 1, layer[b]):
            vlayer.append(l)
            vwidth.append(DUMMY_W)
            chain.append(len(vlayer) - 1)
        chain.append(b)
        chains.append((a, b, shape, chain))
    total = len(vlayer)
    up, down = collections.defaultdict(list), collections.defaultdict(list)
    for _, _, _, chain in chains:
        for u, v in zip(chain, chain[1:]):
            down[u].append(v)
            up[v].append(u)
    depth = max(vlayer) + 1 if vlayer else 0
    layers = [[] for _ in range(depth)]
    for v in range(total):
        layers[vlayer[v]].append(v)
    pos = [0.0] * total
    for members in layers:
        for i, v in enumerate(members):
            pos[v] = float(i)
    for sweep in range(sweeps):  # barycentre ordering, alternating down and up
        order = range(1, depth) if sweep % 2 == 0 else range(depth - 2, -1, -1)
        nbrs = up if sweep % 2 == 0 else down
        for l in order:
            members = layers[l]
            bary = {v: (sum(pos[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else pos[v])
                    for v in members}
            members.sort(key=lambda v: (bary[v], v >= n))
            for i, v in enumerate(members):
                pos[v] = float(i)
    # x coordinates: place each layer left to right, then pull towards neighbours
    x = [0.0] * total
    for members in layers:
        cursor = 0.0
        for v in members:
            x[v] = cursor + vwidth[v] / 2.0
            cursor += vwidth[v] + GAP_X
    both = collections.defaultdict(list)
    for v in range(total):
        both[v] = up[v] + down[v]
    for sweep in range(2 * sweeps + 1):  # down, up, ..., then both neighbours to balance
        nbrs = both if sweep == 2 * sweeps else (up if sweep % 2 == 0 else down)
        order = range(depth) if sweep % 2 == 0 else range(depth - 1, -1, -1)
        for l in order:
            members = layers[l]
            want = [(sum(x[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else x[v]) for v in members]
            placed = []
            for i, v in enumerate(members):  # left-to-right: keep order and spacing
                lo = placed[-1] + (vwidth[members[i - 1]] + vwidth[v]) / 2.0 + GAP_X if placed else -1e18
                placed.append(max(want[i], lo))
            shift = (sum(want) - sum(placed)) / len(placed) if placed else 0.0
            for v, px in zip(members, placed):
                x[v] = px + shift
    left = min(x[v] - vwidth[v] / 2.0 for v in range(total)) if total else 0.0
    for v in range(total):
        x[v] -= left - 20
    ys = [20 + NODE_H / 2.0 + l * (NODE_H + GAP_Y) for l in range(depth)]
    for node in nodes:
        node.update(x=round(x[node["id"]], 1), y=ys[layer[node["id"]]], w=NODE_W, h=NODE_H)
    # spread the ports of nodes with several edges along their top/bottom sides, ordered by
    # the x of the neighbouring point, so that arrow heads and shape labels do not pile up
    port_out, port_in = {}, {}
    outs, ins = collections.defaultdict(list), collections.defaultdict(list)
    for k, (_, _, _, chain) in enumerate(chains):
        outs[chain[0]].append((x[chain[1]], k))
        ins[chain[-1]].append((x[chain[-2]], k))
    for ports, groups in ((port_out, outs), (port_in, ins)):
        for v, items in groups.items():
            items.sort()
            span = min(NODE_W * 0.7, 40.0 * (len(items) - 1))
            for i, (_, k) in enumerate(items):
                offset = -span / 2 + span * i / (len(items) - 1) if len(items) > 1 else 0.0
                ports[k] = x[v] + offset
    polylines = []
    for k, (a, b, shape, chain) in enumerate(chains):
        points = [port_out[k], ys[vlayer[chain[0]]] + NODE_H / 2.0]
        for v in chain[1:-1]:
            points += [x[v], ys[vlayer[v]]]
        points += [port_in[k], ys[vlayer[chain[-1]]] - NODE_H / 2.0]
        polylines.append((a, b, shape, [round(p, 1) for p in points]))
    width = (max(x[v] + vwidth[v] / 2.0 for v in range(total)) + 20) if total else 0
    height = (ys[-1] + NODE_H / 2.0 + 20) if ys else 0
    return polylines, (round(width, 1), round(height, 1))


def to_dot(summary, title=None):
    """Graphviz DOT text of the folded graph, output shapes on the edges (no binary needed)."""
    nodes, edges = fold_graph(summary)
    rows = summary.rows

    def quote(text):
        return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"')
    lines = ["digraph %s {" % quote(title or summary.name),
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=10];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8, color="#666666"];']
    for node in nodes:
        macs = sum(rows[i].macs for i in node["rows"])
        params = sum(rows[i].params for i in node["rows"])
        detail = node["label"] + ("\\nparams %s  MACs %s" % (human_count(params), human_count(macs))
                                  if node["rows"] else "")
        color = _color(rows[node["rows"][0]].op if node["rows"] else "input")
        lines.append("  n%d [label=%s, fillcolor=%s];" % (
            node["id"], quote(node["title"] + "\\n" + detail).replace("\\\\n", "\\n"), quote(color)))
    for a, b, shape in edges:
        lines.append("  n%d -> n%d [label=%s];" % (a, b, quote(shape)))
    lines.append("}")
    return "\n".join(lines) + "\n"


_COLORS = {"Convolution": "#9ecae1", "Deconvolution": "#9ecae1", "FullyConnected": "#fdae6b",
           "Pooling": "#a1d99b", "BatchNorm": "#dadaeb", "Activation": "#fcbba1",
           "Concat": "#fdd0a2", "concat": "#fdd0a2", "elemwise_add": "#c7e9c0",
           "_Plus": "#c7e9c0", "_plus": "#c7e9c0", "add_n": "#c7e9c0", "ElementWiseSum": "#c7e9c0",
           "SoftmaxOutput": "#bcbddc", "softmax": "#bcbddc", "input": "#fee391"}


def _color(op):
    return _COLORS.get(op, "#e5e5e5")


def _atomic_write(path, data):
    """Write bytes or text to ``path`` atomically; InspectError if its folder does not exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InspectError("cannot write %s: folder %s does not exist" % (path, folder))
    common.atomic_write_text(path, data, make_dirs=False)


def write_graphviz(summary, path, fmt=None, title=None):
    """Write DOT (always possible) or SVG/PDF (needs Graphviz's ``dot`` binary) to ``path``."""
    fmt = fmt or os.path.splitext(path)[1].lstrip(".").lower() or "dot"
    source = to_dot(summary, title)
    if fmt in ("dot", "gv"):
        _atomic_write(path, source)
        return path
    import graphviz
    try:
        data = graphviz.Source(source).pipe(format=fmt)
    except Exception as err:  # ExecutableNotFound, CalledProcessError
        raise InspectError("cannot render %s with Graphviz (%s); install the 'dot' binary "
                           "(apt-get install graphviz) or write --dot instead"
                           % (fmt.upper(), _first_line(err)))
    _atomic_write(path, data)
    return path


def html_page(summary, title=None):
    """The self-contained interactive page (str): canvas graph, details panel, linked table."""
    nodes, edges = fold_graph(summary)
    polylines, (width, height) = layout_graph(nodes, edges)
    rows = summary.rows
    node_of_row = {}
    for node in nodes:
        for i in node["rows"]:
            node_of_row[i] = node["id"]
    payload = {
        "title": title or summary.name,
        "inputs": {k: _shape_text(v) for k, v in summary.inputs.items()},
        "totals": {"params": summary.total_params, "aux": summary.total_aux,
                   "macs": summary.total_macs, "ops": summary.total_ops,
                   "bytes": summary.total_activation_bytes, "layers": len(rows)},
        "warnings": summary.warnings,
        "rows": [[r.name, r.op, _shape_text(r.output_shape), r.params, r.macs, r.ops,
                  r.activation_bytes, r.stage, r.unit, node_of_row[r.index], int(r.counted),
                  {k: str(v) for k, v in r.attrs.items()},
                  {k: _shape_text(v) for k, v in r.param_shapes.items()},
                  [_shape_text(s) for s in r.output_shapes]] for r in rows],
        "nodes": [[n["x"], n["y"], n["title"], n["label"], n["shape"], n["rows"],
                   _color(rows[n["rows"][0]].op if n["rows"] else "input")] for n in nodes],
        "edges": [[a, b, shape, pts] for a, b, shape, pts in polylines],
        "size": [width, height], "node_size": [NODE_W, NODE_H],
    }
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    with open(os.path.join(_ASSETS, "inspect.html"), encoding="utf-8") as f:
        template = f.read()
    return (template.replace("__MXCNN_TITLE__", _html.escape(payload["title"]))
            .replace("/*__MXCNN_DATA__*/null", data))


def write_html(summary, path, title=None):
    """Write :func:`html_page` atomically to ``path``."""
    _atomic_write(path, html_page(summary, title))
    return path


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def _shape_arg(text):
    try:
        name, dims = text.split("=", 1)
        shape = tuple(int(v) for v in dims.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InspectError("--input-shape wants NAME=N,C,H,W (e.g. data=1,3,224,224), got %r" % text)
    if not name or not shape or min(shape) <= 0:
        raise InspectError("--input-shape wants NAME=N,C,H,W with positive sizes, got %r" % text)
    return name.strip(), shape


def _option_arg(text):
    if "=" not in text:
        raise InspectError("--option wants key=value (e.g. widen_factor=4), got %r" % text)
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except ValueError:
        pass  # keep strings such as shortcut_type=A
    return key.strip(), value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mxcnn-inspect",
        description="Per-layer output shapes, parameters, MACs and activation memory of any MXNet "
                    "symbol (a registered network name or a prefix-symbol.json), with Graphviz "
                    "and an interactive offline HTML view.",
        epilog="MACs count conv/deconv/FC/dot multiply-accumulates for the given batch (bias "
               "excluded); BN, activations, pooling and element-wise arithmetic are in the "
               "'Other ops' column. Unknown operators count 0 and are marked (?).")
    parser.add_argument("network", help="registered network name (see symbols.list_networks()) "
                                        "or path to an MXNet symbol JSON file")
    parser.add_argument("--num-layers", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-shape", default="3,32,32", help="C,H,W (default 3,32,32)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="family option for a registered network, repeatable")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        help="shape of a data input, repeatable (default data=BATCH,C,H,W)")
    parser.add_argument("--group-by", choices=GROUP_BY, default="none")
    parser.add_argument("--sort-by", choices=SORT_KEYS, default=None)
    parser.add_argument("--html", metavar="PAGE", help="write the interactive HTML page")
    parser.add_argument("--dot", metavar="FILE", help="write Graphviz DOT text")
    parser.add_argument("--svg", metavar="FILE", help="write SVG (needs Graphviz's dot)")
    parser.add_argument("--pdf", metavar="FILE", help="write PDF (needs Graphviz's dot)")
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    return parser


def run(args):
    """Carry out parsed arguments; returns the Summary (raises InspectError on bad input)."""
    as_image_shape = common.sibling("symbols").as_image_shape
    try:
        image_shape = as_image_shape(args.image_shape)
    except ValueError as err:
        raise InspectError(str(err))
    if args.batch_size < 1:
        raise InspectError("--batch-size must be at least 1, got %d" % args.batch_size)
    options = dict(_option_arg(o) for o in args.option)
    sym = load_symbol(args.network, args.num_layers, args.num_classes, image_shape, options)
    shapes = dict(_shape_arg(s) for s in args.input_shape)
    if not shapes:
        if "data" not in sym.list_arguments():
            raise InspectError("the symbol has no input named 'data'; give its input shapes with "
                               "--input-shape NAME=N,C,H,W (arguments: %s)"
                               % _short_list(sym.list_arguments()))
        shapes = {"data": (args.batch_size,) + image_shape}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported in the table footer instead
        summary = summarize(sym, **shapes)
    summary.name = os.path.basename(args.network) if args.network.endswith(".json") else (
        args.network + ("-%d" % args.num_layers if args.num_layers else ""))
    if not args.quiet:
        print(summary.render(group_by=args.group_by, sort_by=args.sort_by))
    for path, fmt in ((args.dot, "dot"), (args.svg, "svg"), (args.pdf, "pdf")):
        if path:
            write_graphviz(summary, path, fmt)
    if args.html:
        write_html(summary, args.html)
    if args.json:
        _atomic_write(args.json, json.dumps(summary.to_json_dict(), indent=1))
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except InspectError as err:
        print("mxcnn-inspect: error: %s" % err, file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except OSError as err:
        print("mxcnn-inspect: error: %s" % err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
