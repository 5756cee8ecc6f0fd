"""Count a symbol's operators (:func:`summarize`) and get the symbol to count (:func:`load_symbol`).

    >>> from mxcnn.graph.inspector import summarize
    >>> s = summarize(sym, data=(1, 3, 32, 32))
    >>> s.total_macs, s.total_params
    >>> print(s.render(group_by="stage"))

The rules are in :mod:`.counting`; shapes come from MXNet's ``infer_shape_partial`` on the
symbol's internals (every operator output), so nothing is allocated or run.
"""
from __future__ import annotations

import collections
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mxcnn import common
from mxcnn.graph.inspector.counting import count_operator, prod
from mxcnn.graph.inspector.summary import InspectError, LayerRow, Summary, assign_groups, group_names
from mxcnn.graph.symbol_json import symbol_graph

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["summarize", "load_symbol", "max_dimension", "check_shape"]


def max_dimension() -> int:
    """The largest size of one dimension MXNet takes: 2^31 - 1 unless built with int64 sizes.

    MXNet 1.9.1's pip wheels pass shapes to the library as int32 (``_infer_shape_impl``
    raises "larger than 2^31 elements" otherwise); ``USE_INT64_TENSOR_SIZE`` builds take int64.
    """
    import mxnet as mx
    try:
        int64 = mx.runtime.Features().is_enabled("INT64_TENSOR_SIZE")
    except RuntimeError:  # a build without that feature flag
        int64 = False
    return 2 ** 63 - 1 if int64 else 2 ** 31 - 1


def check_shape(name: str, value: Iterable[int]) -> tuple[int, ...]:
    """``value`` as a tuple of ints in 1..max_dimension(); InspectError naming ``name`` if not."""
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InspectError("input shape for %r must be a tuple of ints, got %r" % (name, value))
    limit = max_dimension()
    for size in shape:
        if size < 1:
            raise InspectError("input shape for %r must have positive sizes, got %r" % (name, shape))
        if size > limit:
            raise InspectError("input shape for %r has a size of %d; MXNet takes at most %d per "
                               "dimension: use a smaller shape or batch size" % (name, size, limit))
    return shape


def _is_label(name):
    return name.endswith("label")


# --------------------------------------------------------------------------------------------
# shapes of every graph entry
# --------------------------------------------------------------------------------------------

#: the shapes of one inference: argument/auxiliary name -> shape; (node name, output index)
#: -> shape and bytes; node name -> number of outputs
_Shapes = collections.namedtuple("_Shapes", "inputs arg aux entry entry_bytes outputs")


def _input_shapes(sym, input_shapes):
    """The given input shapes checked against the symbol's arguments and MXNet's limits."""
    import mxnet as mx
    if not isinstance(sym, mx.sym.Symbol):
        raise InspectError("summarize() needs an mx.sym.Symbol, got %s" % type(sym).__name__)
    shapes = {key: check_shape(key, value) for key, value in input_shapes.items()}
    arguments = sym.list_arguments()
    unknown_inputs = sorted(set(shapes) - set(arguments))
    if unknown_inputs:
        raise InspectError("the symbol has no input named %s; its arguments are: %s"
                           % (", ".join(unknown_inputs), common.short_list(arguments)))
    return shapes


def _infer_shapes(internals, shapes):
    """Shapes (and dtypes) of every argument, auxiliary state and output of ``internals``."""
    import mxnet as mx
    try:
        arg_shapes, out_shapes, aux_shapes = internals.infer_shape_partial(**shapes)
    except mx.base.MXNetError as err:
        raise InspectError("shape inference failed for inputs %s: %s" % (shapes, common.error_line(err)))
    arg_shape = dict(zip(internals.list_arguments(), arg_shapes))
    missing = [n for n in internals.list_arguments() if not arg_shape[n] or 0 in arg_shape[n]]
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
    # internals' outputs are the visible outputs of every node in graph order
    entry, entry_bytes, outputs = {}, {}, collections.Counter()
    for k, shape in enumerate(out_shapes):
        node_name = internals[k].name
        key = (node_name, outputs[node_name])
        outputs[node_name] += 1
        entry[key] = tuple(shape)
        itemsize = np.dtype(out_types[k]).itemsize if out_types and out_types[k] else 4
        entry_bytes[key] = prod(shape) * itemsize
    aux_shape = dict(zip(internals.list_auxiliary_states(), aux_shapes))
    return _Shapes(shapes, arg_shape, aux_shape, entry, entry_bytes, outputs)


# --------------------------------------------------------------------------------------------
# one row per operator
# --------------------------------------------------------------------------------------------

class _RowBuilder:
    """Turns the operator nodes of a symbol's JSON graph into LayerRows and drawing edges."""

    def __init__(self, nodes, shapes):
        self.nodes, self.shapes = nodes, shapes
        self.rows, self.edges, self.row_of_node, self.unknown = [], [], {}, {}
        self.consumed = set()  # parameters already counted: shared weights count once

    def _inputs(self, node):
        """(in_shapes, data_inputs, param_shapes, params, aux) of one operator node."""
        s = self.shapes
        in_shapes, data_inputs, param_shapes, params, aux = [], [], {}, 0, 0
        for src, out_index, _ in node["inputs"]:
            src_node = self.nodes[src]
            src_name = src_node["name"]
            if src_node["op"] != "null":
                in_shapes.append(s.entry.get((src_name, out_index), ()))
                data_inputs.append(src_name)
                self.edges.append((self.row_of_node[src], out_index, len(self.rows)))
            elif src_name in s.inputs or _is_label(src_name):
                in_shapes.append(s.arg.get(src_name, ()))
                if src_name in s.inputs:
                    self.edges.append((src_name, 0, len(self.rows)))
            else:
                shape = s.arg.get(src_name, s.aux.get(src_name, ()))
                param_shapes[src_name] = shape
                if src_name not in self.consumed:
                    self.consumed.add(src_name)
                    if src_name in s.aux:
                        aux += prod(shape)
                    else:
                        params += prod(shape)
        return in_shapes, data_inputs, param_shapes, params, aux

    def add(self, node_id, node):
        """Count one operator node and append its row."""
        name, op = node["name"], node["op"]
        attrs = dict(node.get("attrs", node.get("param", {})) or {})
        in_shapes, data_inputs, param_shapes, params, aux = self._inputs(node)
        s = self.shapes
        outs = [s.entry[(name, j)] for j in range(s.outputs[name])] or [()]
        learnable = [shape for n, shape in param_shapes.items() if n not in s.aux]
        macs, ops, known = count_operator(op, attrs, outs, in_shapes, learnable)
        if not known:
            self.unknown.setdefault(op, name)
        stage, unit = group_names(name)
        self.row_of_node[node_id] = len(self.rows)
        self.rows.append(LayerRow(
            index=len(self.rows), name=name, op=op, attrs=attrs, inputs=data_inputs,
            output_shapes=outs, params=params, param_shapes=param_shapes, aux=aux,
            macs=int(macs), ops=int(ops),
            activation_bytes=sum(s.entry_bytes[(name, j)] for j in range(s.outputs[name])),
            stage=stage, unit=unit, counted=known))


def summarize(sym: mx.sym.Symbol, **input_shapes: Sequence[int]) -> Summary:
    """Count every operator of ``sym`` for the given input shapes.

    ``input_shapes`` maps each data input to a full shape including the batch, e.g.
    ``summarize(sym, data=(1, 3, 224, 224))``; labels (``*_label``) are inferred.
    Returns a :class:`Summary`; raises :class:`InspectError` when shapes are missing,
    inconsistent or larger than MXNet takes (:func:`max_dimension`).  Unknown operators
    give one ``UserWarning`` per operator type.
    """
    shapes = _infer_shapes(sym.get_internals(), _input_shapes(sym, input_shapes))
    graph = symbol_graph(sym)
    nodes = graph["nodes"]
    builder = _RowBuilder(nodes, shapes)
    for node_id, node in enumerate(nodes):
        if node["op"] != "null":
            builder.add(node_id, node)
    messages = []
    for op, first in builder.unknown.items():
        message = ("operator %s (first at %s) is not known to the MAC counter: counted as 0 MACs"
                   % (op, first))
        messages.append(message)
        warnings.warn(message, stacklevel=2)
    assign_groups(builder.rows)
    heads = [(builder.row_of_node.get(h[0], nodes[h[0]]["name"]), h[1]) for h in graph["heads"]]
    data_inputs = collections.OrderedDict((n, shapes.arg[n]) for n in sym.list_arguments()
                                          if n in shapes.inputs)
    return Summary(builder.rows, data_inputs, builder.edges, heads, messages)


# --------------------------------------------------------------------------------------------
# loading symbols
# --------------------------------------------------------------------------------------------

def _load_symbol_file(source):
    """An ``mx.sym.Symbol`` from a symbol JSON file, or InspectError naming the file's problem."""
    import mxnet as mx
    if os.path.isdir(source):
        raise InspectError("%s is a folder; give the prefix-symbol.json file inside it" % source)
    if not os.path.isfile(source):
        raise InspectError("no such symbol file: %s" % source)
    try:
        with open(source, encoding="utf-8") as f:
            graph = json.load(f)
    except OSError as err:
        raise InspectError("cannot read %s (%s); check that it is readable" % (source, err.strerror))
    except ValueError as err:  # includes UnicodeDecodeError
        raise InspectError("%s is not JSON (%s); expected an MXNet prefix-symbol.json" % (source, err))
    if not (isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "heads" in graph):
        raise InspectError("%s is JSON but not an MXNet symbol (no 'nodes'/'heads'); expected "
                           "a file written by Symbol.save or HybridBlock.export" % source)
    try:
        return mx.sym.load(source)
    except mx.base.MXNetError as err:
        raise InspectError("MXNet cannot load %s as a symbol: %s" % (source, common.error_line(err)))


def load_symbol(source: str, num_layers: int | None = None, num_classes: int = 10,
                image_shape: str | Sequence[int] = (3, 32, 32),
                options: Mapping[str, Any] | None = None) -> mx.sym.Symbol:
    """An ``mx.sym.Symbol`` from a registered network name or a symbol JSON file path."""
    import mxnet as mx
    if source.endswith(".json") or os.path.sep in source or os.path.isfile(source):
        return _load_symbol_file(source)
    from mxcnn.symbols import get_symbol
    try:
        return get_symbol(source, num_classes=num_classes, num_layers=num_layers,
                          image_shape=image_shape, **(options or {}))
    except ImportError as err:
        raise InspectError("network %r is registered but its module cannot be imported (%s)"
                           % (source, err))
    except mx.base.MXNetError as err:  # an option MXNet refuses (num_filter out of range, ...)
        raise InspectError("cannot build %s with these options: %s" % (source, common.error_line(err)))
    except (ValueError, TypeError) as err:
        raise InspectError(str(err))
