"""Training-graph rewrite for oneDNN CPUs: channel counts padded to oneDNN's 16-channel block.

MXNet 1.9.1 binds oneDNN only to layouts whose memory is exactly the tensor's size: its
convolution walks past every implementation whose blocked format would pad the channels
(``mkldnn_convolution.cc``).  A tensor whose channels are no multiple of 16 therefore stays
in the plain NCHW layout on AVX-512, and every kernel that touches it runs its plain path.
DenseNet-BC-100-12 (k = 12 new channels per layer, 24 + 12i channels per concatenation)
measured so on Zen 5 (bench/step_profile.py --nets densenet100 --dtype bfloat16): its
convolutions ran ``x64:gemm:jit`` at 160 GFLOP/s, its BatchNorms ``ncsp_bnorm`` (48% of the
oneDNN time), and the 5-D concatenation (``symbols.densenet.concat_features``) kept it all
in float32 under AMP.

``pad_channels(sym, **shapes)`` gives every Convolution whose filters are no multiple of
:data:`BLOCK` zero filters up to the next multiple.  The zero channels travel through
BatchNorm, activations, pooling and channel concatenations, which then join 16-aligned
pieces (oneDNN's own 4-D Concat: its backward is exact when every piece is aligned, unlike
the unaligned case the 5-D detour avoids), and each layer that reads them gets zero weights
there.  The weights stay Variables of their own names and shapes: the padding is done on
them inside the graph (``Pad``), so their gradients, optimizer states and checkpoints are
the unpadded ones.  A BatchNorm over padded channels normalises its zero channels with
padded gamma/beta (zeros) to zeros.

One thing changes shape: the moving mean/variance of those BatchNorms (auxiliary states
cannot be computed inside a graph).  Their nodes carry ``__channel_segments__`` and
:class:`AuxPadding` maps the states between the two shapes; ``train.engines`` wraps every
engine bound on a padded graph in it, so parameters, EMA, lookahead and checkpoints only
ever see the unpadded states.

A Convolution whose filters are a multiple of 8 but not of 16 is slow on AVX-512 CPUs in
another way: oneDNN 2.4 gives its output, and the next convolution's input, the 8-channel
blocked layout of AVX2, and runs its ``jit:avx2`` kernels there.  airbench's whitening
layer (24 filters) measured so on an Intel Xeon (``DNNL_VERBOSE``, ``--preset fast92``):
the first block convolution reading it took 15% of the step for 9% of the FLOPs, and the
max pool after it ran ``jit:avx2`` too.  Padded to 32 channels, both take the AVX-512
kernels, and airbench94/airbench95 train 1.09x/1.07x faster there (``bench/throughput.py
--knobs no_channel_pad``; GoogLeNet and MobileNetV2 unchanged).  On AVX2 CPUs that block is
native, so there the rule does not apply.

Scope: graphs (without memonger marks) with a channel concatenation of a piece that is no
multiple of 16 channels (DenseNet with k = 12 or 24 at CIFAR size), with
``symbols.densenet``'s 5-D concatenations (also the aligned ones of the ImageNet DenseNets,
which need no padding but then leave MXNet's plain-layout Concat), or, on AVX-512 CPUs, with
a planar, ungrouped Convolution of 8-aligned but not 16-aligned filters (airbench's
whitening, GoogLeNet's 5x5 reductions and MobileNetV2's 24-channel stage).  Anything the padded
channels would reach that the pass does not know (a sum of differently padded tensors, a
loss, a reshape) leaves the graph as it was.  Same argument, auxiliary-state and output names as ``sym``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mxcnn.common.system import cpu_flags
from mxcnn.graph.memonger import MIRROR_ATTR
from mxcnn.graph.symbol_json import concat_detour_pieces, load_rewritten, symbol_graph

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["BLOCK", "SEGMENTS_ATTR", "pad_channels", "padded_batchnorms", "real_index",
           "AuxPadding"]

#: oneDNN's channel block on AVX-512 (AVX2's 8 divides it).
BLOCK = 16
#: oneDNN's channel block on AVX2, which it also picks on AVX-512 for 8-aligned channels.
AVX2_BLOCK = 8
#: Attribute of the padded BatchNorms and channel Concats: their channels as ``real:padded``
#: pieces, e.g. ``"24:32,12:16,12:16"``.
SEGMENTS_ATTR = "__channel_segments__"
#: Ops that act on each channel alone: a padded input gives an equally padded output.
PER_CHANNEL = ("Activation", "LeakyReLU", "Dropout", "Pooling", "clip", "mean")
SUMS = ("elemwise_add", "_Plus", "_plus", "ElementWiseSum", "add_n")


class _Unsupported(Exception):
    """Padded channels would reach an op the pass does not handle."""


def _round_up(channels):
    return -(-channels // BLOCK) * BLOCK


def _segments_text(segments):
    return ",".join("%d:%d" % seg for seg in segments)


def _parse_segments(text):
    return [tuple(int(v) for v in part.split(":")) for part in text.split(",")]


def _runs(segments):
    """Consecutive equal segments as ``(count, real, padded)`` runs."""
    runs = []
    for real, padded in segments:
        if runs and runs[-1][1:] == (real, padded):
            runs[-1] = (runs[-1][0] + 1, real, padded)
        else:
            runs.append((1, real, padded))
    return runs


def real_index(segments: Iterable[tuple[int, int]]) -> np.ndarray:
    """Positions of the real channels in the padded layout (int array)."""
    index, offset = [], 0
    for real, padded in segments:
        index.extend(range(offset, offset + real))
        offset += padded
    return np.array(index, dtype=np.int64)


def padded_batchnorms(sym: mx.sym.Symbol) -> dict[str, list[tuple[int, int]]]:
    """``{aux state name: segments}`` of the BatchNorms :func:`pad_channels` padded in ``sym``."""
    graph = symbol_graph(sym, keep_amp_casts=True)
    nodes, found = graph["nodes"], {}
    for node in nodes:
        text = node.get("attrs", {}).get(SEGMENTS_ATTR)
        if text and node["op"] != "Concat":
            for ref in node["inputs"][3:5]:  # moving_mean, moving_var
                found[nodes[ref[0]]["name"]] = _parse_segments(text)
    return found


def pad_channels(sym: mx.sym.Symbol, avx512: bool | None = None,
                 **shapes: Sequence[int]) -> tuple[mx.sym.Symbol, int]:
    """``(symbol, count)``: ``sym`` with its Convolutions of unaligned filters padded to a
    multiple of :data:`BLOCK` and its channel concatenations made oneDNN Concats of those
    aligned pieces (module docstring); ``count`` is the number of padded Convolutions and
    Concats, ``(sym, 0)`` where the pass does not apply.  ``avx512``: whether the CPU has
    AVX-512 (default: this machine's flags).  ``shapes``: the input shapes, e.g.
    ``data=(N, 3, 32, 32)``."""
    graph = symbol_graph(sym, keep_amp_casts=True)
    if any(MIRROR_ATTR in node.get("attrs", {}) for node in graph["nodes"]):
        return sym, 0  # graph.memonger planned the unpadded graph
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(**shapes)
    table = dict(zip(internals.list_outputs(), out_shapes))
    avx512 = "avx512f" in cpu_flags() if avx512 is None else avx512
    rewrite = _Rewrite(graph, table, avx512)
    if not rewrite.applies():
        return sym, 0
    try:
        rebuilt = rewrite.run()
    except _Unsupported:
        return sym, 0
    return load_rewritten(rebuilt, sym, "channel padding"), rewrite.concats + rewrite.convs


def _attr(node, key, default=None):
    return node.get("attrs", {}).get(key, default)


def _tuple(text):
    return tuple(int(v) for v in text.strip("()[] ").replace(" ", "").split(",") if v)


class _Rewrite:
    """One pass over the symbol JSON ``graph`` (nodes in topological order); ``table``: the
    shape of every internal output by name; ``avx512``: whether the CPU has AVX-512."""

    def __init__(self, graph, table, avx512):
        self.graph, self.table, self.avx512 = graph, table, avx512
        self.old = graph["nodes"]
        self.nodes, self.new_id, self.layout = [], {}, {}
        self.shaped = {}          # new id of a Variable padded in-graph -> its shape
        self.concats = self.convs = 0
        self.detours = self._detours()
        self.pad_images = False   # set by applies(): the concatenation case pads the images too

    # -- reading the original graph -------------------------------------------------------
    def shape(self, old_id):
        node = self.old[old_id]
        if node["op"] == "null":
            return tuple(self.table[node["name"]])
        name = node["name"]
        return tuple(self.table.get(name + "_output", self.table.get(name + "_output0")))

    def _detours(self):
        """``{reshape id: [piece source refs]}`` for symbols.densenet's 5-D concatenations
        (expand_dims(axis=4) pieces -> Concat(dim=1) -> Reshape to 4-D)."""
        found = {}
        for index, node in enumerate(self.old):
            pieces = concat_detour_pieces(self.old, node)
            if pieces is not None:
                found[index] = pieces
        return found

    def _concat_sources(self, index):
        node = self.old[index]
        if index in self.detours:
            return self.detours[index]
        if node["op"] in ("Concat", "concat") and _attr(node, "dim", "1") == "1" \
                and len(self.shape(index)) == 4:
            return node["inputs"]
        return None

    def applies(self):
        """True when a channel concatenation is a 5-D detour or joins a piece that is no
        multiple of BLOCK channels, or (AVX-512) a Convolution's filters are 8-blocked."""
        for index in range(len(self.old)):
            sources = self._concat_sources(index)
            if sources and (index in self.detours
                            or any(self.shape(ref[0])[1] % BLOCK for ref in sources)):
                self.pad_images = True
                return True
        return self.avx512 and any(self._avx2_blocked(node) for node in self.old)

    @staticmethod
    def _avx2_blocked(node):
        """A planar, ungrouped Convolution whose filters oneDNN keeps in AVX2's 8-block."""
        if node["op"] != "Convolution" or _attr(node, "num_group", "1") != "1" \
                or len(_tuple(_attr(node, "kernel"))) != 2:
            return False
        filters = int(_attr(node, "num_filter"))
        return filters % BLOCK != 0 and filters % AVX2_BLOCK == 0

    # -- writing the new graph ------------------------------------------------------------
    def add(self, op, name, inputs, **attrs):
        node = {"op": op, "name": name, "inputs": inputs}
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        return [len(self.nodes) - 1, 0, 0]

    def remap(self, ref):
        return [self.new_id[ref[0]]] + list(ref[1:])

    def layout_of(self, ref):
        return self.layout.get(ref[0]) if ref[1] == 0 else None

    def pad_axis(self, ref, shape, axis, segments, name):
        """``(ref, shape)`` of tensor ``ref`` (``shape``) with zeros inserted along ``axis``:
        each ``(real, padded)`` segment keeps its ``real`` entries and gets zeros up to
        ``padded``.  Equal neighbouring segments are padded as one run (slice, reshape so
        the run is axis 2 of a 4-D view, ``Pad``, reshape back); the runs are concatenated."""
        pre, post = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))
        runs, parts, offset = _runs(segments), [], 0
        for i, (count, real, padded) in enumerate(runs):
            part, stem = ref, "%s_pad%d" % (name, i)
            if len(runs) > 1:
                part = self.add("slice_axis", stem + "_slice", [ref], axis=axis, begin=offset,
                                end=offset + count * real)
            if padded != real:
                part = self.add("Reshape", stem + "_view", [part], shape=(pre, count, real, post))
                part = self.add("Pad", stem, [part], mode="constant", constant_value=0,
                                pad_width=(0, 0, 0, 0, 0, padded - real, 0, 0))
                part = self.add("Reshape", stem + "_back", [part],
                                shape=shape[:axis] + (count * padded,) + shape[axis + 1:])
            parts.append(part)
            offset += count * real
        out_shape = shape[:axis] + (sum(c * p for c, _, p in runs),) + shape[axis + 1:]
        if len(parts) == 1:
            return parts[0], out_shape
        return self.add("Concat", name + "_padded", parts, dim=axis, num_args=len(parts)), out_shape

    def padded_param(self, old_ref, axes_segments, name):
        """The parameter ``old_ref`` (a Variable, or a frozen one's BlockGrad) padded along
        each ``(axis, segments)``."""
        ref, shape = self.remap(old_ref), self.shape(old_ref[0])
        source = old_ref[0]
        while self.old[source]["op"] in ("BlockGrad", "stop_gradient"):  # a frozen weight
            source = self.old[source]["inputs"][0][0]
        if self.old[source]["op"] == "null":  # MXNet infers no shape back through Pad
            self.shaped[self.new_id[source]] = shape
        for axis, segments in axes_segments:
            ref, shape = self.pad_axis(ref, shape, axis, segments, name)
            name += "_oc"
        return ref

    def run(self):
        handlers = {"Convolution": self.convolution, "BatchNorm": self.batchnorm,
                    "_contrib_BatchNormWithReLU": self.batchnorm,
                    "FullyConnected": self.fully_connected}
        skipped = {ref[0] for index in self.detours for ref in self.old[index]["inputs"]}
        skipped |= {ref[0] for index in skipped for ref in self.old[index]["inputs"]
                    if self.old[ref[0]]["op"] == "expand_dims"}
        for index, node in enumerate(self.old):
            if index in skipped:
                continue
            if index in self.detours or self._concat_sources(index):
                self.concat(index, node)
            elif node["op"] in handlers:
                handlers[node["op"]](index, node)
            else:
                self.per_channel_or_plain(index, node)
        for new, shape in self.shaped.items():
            self.nodes[new].setdefault("attrs", {})["__shape__"] = str(tuple(shape))
        return {"nodes": self.nodes,
                "arg_nodes": [i for i, n in enumerate(self.nodes) if n["op"] == "null"],
                "heads": [self.remap(h) for h in self.graph["heads"]],
                "attrs": self.graph.get("attrs", {})}

    def emit(self, index, node, inputs, layout=None, **attrs):
        new = dict(node, inputs=inputs)
        if attrs:
            new["attrs"] = dict(node.get("attrs", {}), **{k: str(v) for k, v in attrs.items()})
        self.nodes.append(new)
        self.new_id[index] = len(self.nodes) - 1
        if layout is not None and any(real != padded for real, padded in layout):
            self.layout[index] = layout

    # -- the ops -------------------------------------------------------------------------
    def concat(self, index, node):
        """A channel concatenation of aligned pieces, as oneDNN's 4-D Concat."""
        sources = self._concat_sources(index)
        layout = []
        for ref in sources:
            piece = self.layout_of(ref)
            if piece is None:
                channels = self.shape(ref[0])[1]
                if channels % BLOCK:
                    raise _Unsupported(node["name"])
                piece = [(channels, channels)]
            layout.extend(piece)
        concat = {"op": "Concat", "name": node["name"],  # marked for graph.precision
                  "attrs": {"dim": "1", "num_args": str(len(sources)),
                            SEGMENTS_ATTR: _segments_text(layout)}}
        self.emit(index, concat, [self.remap(ref) for ref in sources], layout)
        self.concats += 1

    def convolution(self, index, node):
        inputs = [self.remap(ref) for ref in node["inputs"]]
        in_layout = self.layout_of(node["inputs"][0])
        if in_layout is None and self._reads_data(node):
            in_layout = self.padded_data(node, inputs)
        filters, groups = int(_attr(node, "num_filter")), int(_attr(node, "num_group", "1"))
        planar = len(_tuple(_attr(node, "kernel"))) == 2
        if in_layout is not None and (groups != 1 or not planar):
            raise _Unsupported(node["name"])
        pad_out = groups == 1 and planar and filters % BLOCK != 0
        if in_layout is None and not pad_out:
            return self.emit(index, node, inputs)
        out = [(filters, _round_up(filters))] if pad_out else None
        weight_axes = ([(1, in_layout)] if in_layout else []) + ([(0, out)] if out else [])
        inputs[1] = self.padded_param(node["inputs"][1], weight_axes, node["name"] + "_weight")
        if out and len(inputs) > 2:
            inputs[2] = self.padded_param(node["inputs"][2], [(0, out)], node["name"] + "_bias")
        if out:
            self.convs += 1
            return self.emit(index, node, inputs, out, num_filter=out[0][1])
        self.emit(index, node, inputs)

    def _reads_data(self, node):
        source = self.old[node["inputs"][0][0]]
        return (self.pad_images and source["op"] == "null" and source["name"] == "data"
                and int(_attr(node, "num_group", "1")) == 1
                and self.shape(node["inputs"][0][0])[1] % BLOCK != 0)

    def padded_data(self, node, inputs):
        """A stem's input images with zero channels up to BLOCK (3 -> 16): oneDNN's blocked
        kernels then take the stem too, and in bfloat16 its output joins the blocked
        concatenations without a plain-layout cast (which sent them to ``ref`` kernels)."""
        shape = self.shape(node["inputs"][0][0])
        layout = [(shape[1], _round_up(shape[1]))]
        inputs[0], _ = self.pad_axis(inputs[0], (0,) + shape[1:], 1, layout,
                                     node["name"] + "_data")
        return layout

    def batchnorm(self, index, node):
        inputs = [self.remap(ref) for ref in node["inputs"]]
        layout = self.layout_of(node["inputs"][0])
        if layout is None:
            return self.emit(index, node, inputs)
        if int(_attr(node, "axis", "1")) != 1:
            raise _Unsupported(node["name"])
        for i, part in ((1, "_gamma"), (2, "_beta")):
            inputs[i] = self.padded_param(node["inputs"][i], [(0, layout)], node["name"] + part)
        attrs = {SEGMENTS_ATTR: _segments_text(layout)}
        self.emit(index, node, inputs, layout, **attrs)

    def fully_connected(self, index, node):
        inputs = [self.remap(ref) for ref in node["inputs"]]
        layout = self.layout_of(node["inputs"][0])
        if layout is not None:
            if _attr(node, "flatten", "True") not in ("True", "true", "1") or \
                    any(d != 1 for d in self.shape(node["inputs"][0][0])[2:]):
                raise _Unsupported(node["name"])
            inputs[1] = self.padded_param(node["inputs"][1], [(1, layout)],
                                          node["name"] + "_weight")
        self.emit(index, node, inputs)

    def per_channel_or_plain(self, index, node):
        """Ops acting on each channel alone pass the padding on; any other op must not see it."""
        inputs = [self.remap(ref) for ref in node["inputs"]]
        layouts = [self.layout_of(ref) for ref in node["inputs"]]
        padded = [l for l in layouts if l is not None]
        if not padded:
            return self.emit(index, node, inputs)
        op, first = node["op"], layouts[0]
        spatial = self.shape(node["inputs"][0][0])[2:]
        if op == "mean" and _tuple(_attr(node, "axis", "()")) not in ((2, 3), (3, 2)):
            raise _Unsupported(node["name"])
        if op == "LeakyReLU" and _attr(node, "act_type", "leaky") == "prelu":
            raise _Unsupported(node["name"])  # its slopes are a per-channel parameter
        if op in PER_CHANNEL and len(padded) == 1 and first is not None:
            return self.emit(index, node, inputs, first)
        if op in ("Flatten", "flatten") and all(d == 1 for d in spatial):
            return self.emit(index, node, inputs, first)
        if op in SUMS and all(l == first for l in layouts):
            return self.emit(index, node, inputs, first)
        raise _Unsupported(node["name"])


class AuxPadding:
    """The BatchNorm moving statistics of a padded graph, mapped to and from their unpadded
    shapes.  ``segments``: :func:`padded_batchnorms` of the graph.  Padded entries start as
    mean 0, variance 1 (any finite value gives the zero channels zero outputs)."""

    FILL = {"moving_var": 1.0}

    def __init__(self, segments):
        self.segments = dict(segments)
        self._index, self._fills = {}, {}

    @classmethod
    def of(cls, sym: mx.sym.Symbol) -> AuxPadding:
        """The padding of training graph ``sym`` (false when it has none)."""
        return cls(padded_batchnorms(sym))

    def __bool__(self):
        return bool(self.segments)

    @property
    def names(self) -> list[str]:
        return list(self.segments)

    def _fill(self, name):
        return next((v for k, v in self.FILL.items() if name.endswith(k)), 0.0)

    def _indices(self, name, ctx):
        """(real positions in the padded array, padded position -> source in ``[real, fill]``)."""
        key = (name, ctx)
        if key not in self._index:
            import mxnet as mx
            segments = self.segments[name]
            real = real_index(segments)
            source = np.full(sum(p for _, p in segments), len(real), dtype=np.int64)
            source[real] = np.arange(len(real))
            self._index[key] = (mx.nd.array(real, ctx=ctx, dtype="int64"),
                                mx.nd.array(source, ctx=ctx, dtype="int64"))
        return self._index[key]

    def unpad(self, name: str, padded: mx.nd.NDArray, out: mx.nd.NDArray | None = None) -> mx.nd.NDArray:
        """The real channels of ``padded`` (written to ``out`` if given)."""
        import mxnet as mx
        real, _ = self._indices(name, padded.context)
        return mx.nd.take(padded, real, out=out) if out is not None else mx.nd.take(padded, real)

    def pad(self, name: str, real: mx.nd.NDArray, out: mx.nd.NDArray | None = None) -> mx.nd.NDArray:
        """``real`` spread over the padded layout, the rest filled (written to ``out`` if given)."""
        import mxnet as mx
        _, source = self._indices(name, real.context)
        key = (name, real.context, real.dtype)
        if key not in self._fills:  # made once: pad() runs before most training steps
            self._fills[key] = mx.nd.full((1,), self._fill(name), ctx=real.context,
                                          dtype=real.dtype)
        extended = mx.nd.concat(real, self._fills[key], dim=0)
        return mx.nd.take(extended, source, out=out) if out is not None else mx.nd.take(extended, source)

    def pad_params(self, aux_params: Mapping[str, mx.nd.NDArray]) -> dict[str, mx.nd.NDArray]:
        """``aux_params`` with the padded states in their padded shapes."""
        return {name: self.pad(name, value) if name in self.segments else value
                for name, value in aux_params.items()}
