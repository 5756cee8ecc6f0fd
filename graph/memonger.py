"""Sublinear-memory training: a mirroring plan for MXNet's executor.

Chen, Xu, Zhang & Guestrin 2016, "Training Deep Nets with Sublinear Memory Cost"
(arXiv:1604.06174): keep only the outputs of chosen *stage* nodes during the
forward pass and recompute the forward segments between them during backward.
With segments of about sqrt(n) nodes the feature-map memory of an n-layer net
grows as O(sqrt(n)) for one extra forward pass of compute.

MXNet 1.9.1's executor recomputes ("mirrors") exactly the nodes that carry the
attribute ``__force_mirroring__='True'``; ``MXNET_BACKWARD_DO_MIRROR`` alone spares
convolutions and BatchNorm and saves nothing on a ResNet, and ``mirror_stage`` is
only a hint read by planners.  :func:`plan` therefore walks the graph in
topological order, cuts it into segments at candidate stage nodes (those tagged
with :func:`symbols.layers.tag_mirror_stage`, or every node when nothing is
tagged), marks every node inside a segment ``__force_mirroring__`` and keeps the
segment outputs.  The segment budget is searched around sqrt(total activation
size) with the executor's own memory estimate (:func:`allocated_mb`).

    >>> sym = symbols.get_symbol("preact_resnet", num_layers=1001, memonger=True)
    >>> sym = graph.memonger.plan(sym, data=(64, 3, 32, 32))   # per-device batch

The result is the same network with attributes added (plain MXNet loads it),
cached in-process and on disk under ``$MXCNN_CACHE_DIR/memonger`` (default
``~/.cache/mxcnn/memonger``) keyed by the symbol JSON, the shapes and the device type.

The plan is made for the device it will train on (``ctx=``, default the CPU): the executor's
estimate is taken from a bind on that device, since operators plan their memory per device
(oneDNN layouts and in-place rules on the CPU, cuDNN's on the GPU).  A GPU plan is therefore
measured on the GPU, where binding allocates for real (the CPU only reserves address space):
plan with the GPU free, and an unplanned graph larger than the GPU counts as out of memory
(any plan that fits beats it).

Train the planned symbol with ``mx.mod.Module`` (or ``simple_bind``): Gluon's CachedOp
(``SymbolBlock`` + ``hybridize``) builds its gradient graph without a mirror function
in 1.9.1 and ignores the attributes (same peak RSS with and without the plan).
"""
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import mxnet as mx
import numpy as np

from mxcnn import common
from mxcnn.graph.symbol_json import symbol_graph

__all__ = ["plan", "allocated_mb", "device", "activation_sizes", "mirror_nodes",
           "mirrored_names", "default_cache_dir", "MIRROR_ATTR", "STAGE_ATTR"]

log = logging.getLogger(__name__)

#: Node attribute the 1.9.1 executor reads to recompute a node during backward.
MIRROR_ATTR = "__force_mirroring__"
#: Attribute families set (via ``tag_mirror_stage``) on candidate segment ends.
STAGE_ATTR = "__mirror_stage__"
#: Bump when the planning rule changes so stale disk caches are ignored.
PLAN_VERSION = 1

# Operators never recomputed: a second run would draw different random numbers
# (the executor itself refuses to mirror Dropout).
_RANDOM_OP = re.compile(r"^(Dropout|_?random_|_sample_|_npi_random|_shuffle)")
# Budgets tried around the best cost-model budget, as factors of it.
_SEARCH_FACTORS = (0.5, 0.71, 1.0, 1.41, 2.0)
_REFINE_FACTORS = (0.84, 1.19)
_TOTAL_MB = re.compile(r"Total (\d+) MB allocated")

_memory_cache = {}


def default_cache_dir() -> str:
    """The plan cache: ``$MXCNN_CACHE_DIR/memonger``, else ``$XDG_CACHE_HOME/mxcnn/memonger``."""
    root = os.environ.get("MXCNN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "mxcnn")
    return os.path.join(root, "memonger")


def _non_parameter_arguments(sym):
    """Arguments that look like data/label inputs (not learnable parameters)."""
    params = ("_weight", "_bias", "_gamma", "_beta")
    return [a for a in sym.list_arguments() if not a.endswith(params)]


def _check_shapes(sym, shapes):
    """Normalise ``shapes`` to {name: tuple}; ``ValueError`` naming what is missing or unknown."""
    inputs = _non_parameter_arguments(sym)
    example = "plan(sym, %s=(64, 3, 32, 32))" % (inputs[0] if inputs else "data")
    if not shapes:
        raise ValueError("memonger needs the input shapes to plan for, e.g. %s; this symbol's "
                         "inputs are: %s" % (example, ", ".join(inputs) or "none"))
    known = set(sym.list_arguments()) | set(sym.list_auxiliary_states())
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise ValueError("memonger got shape(s) for %s, which the symbol does not take; its inputs "
                         "are: %s" % (", ".join(unknown), ", ".join(inputs) or "none"))
    clean = {}
    for name, shape in shapes.items():
        try:
            clean[name] = tuple(int(v) for v in shape)
        except (TypeError, ValueError):
            raise ValueError("shape of %r must be a tuple of ints such as (64, 3, 32, 32), got %r"
                             % (name, shape))
        if not clean[name] or min(clean[name]) <= 0:
            raise ValueError("shape of %r must have positive sizes, got %r" % (name, shape))
    try:
        arg_shapes, _, aux_shapes = sym.infer_shape_partial(**clean)
    except mx.base.MXNetError as err:
        raise ValueError("memonger cannot infer shapes from %s: %s"
                         % (_describe(clean), str(err).strip().splitlines()[0]))
    names = sym.list_arguments() + sym.list_auxiliary_states()
    missing = [n for n, s in zip(names, arg_shapes + aux_shapes) if not s or 0 in s]
    if missing:
        raise ValueError("memonger cannot infer the shape of %s from %s; pass their shapes too, "
                         "e.g. plan(sym, %s=(...))" % (", ".join(missing), _describe(clean),
                                                       missing[0]))
    return clean


def device(ctx: mx.Context | Sequence[mx.Context] | None = None) -> mx.Context:
    """The one device a plan is for: ``ctx`` (a Context, or a list of contexts of one type:
    the first, as every device of a data-parallel job binds the same per-device batch);
    default the CPU.  ``ValueError`` for an empty or mixed list."""
    if ctx is None:
        return mx.cpu()
    if isinstance(ctx, (list, tuple)):
        kinds = sorted({getattr(c, "device_type", repr(c)) for c in ctx})
        if len(kinds) != 1:
            raise ValueError("memonger plans for one device type, got contexts %r" % (list(ctx),))
        ctx = ctx[0]
    if not isinstance(ctx, mx.Context):
        raise ValueError("memonger needs an mx.Context such as mx.gpu(0), got %r" % (ctx,))
    return ctx


def _bind(sym, ctx, grad_req, shapes):
    """``simple_bind`` on ``ctx``; None when the device is out of memory; UserError when
    the device cannot be used at all (no GPU, a CPU-only build)."""
    try:
        return sym.simple_bind(ctx, grad_req=grad_req, **shapes)
    except RuntimeError as err:  # MXNetError, or simple_bind's RuntimeError wrapping it
        text = str(err)
        if "out of memory" in text.lower():
            return None
        raise common.UserError("memonger cannot bind on %s to measure the plan: %s"
                               % (ctx, common.error_line(text, 300)))


def allocated_mb(sym: mx.sym.Symbol, ctx: mx.Context | Sequence[mx.Context] | None = None,
                 **shapes: Sequence[int]) -> float:
    """The executor's own estimate of training memory for ``sym`` at ``shapes``, in MB.

    Binds for training (``grad_req='write'`` on parameters, ``'null'`` on the given
    inputs, as ``Module`` does) on ``ctx`` (default the CPU; see :func:`device`) and sums
    debug_str's "Total N MB allocated".  On the CPU binding reserves but does not touch the
    memory, so even a 20 GB graph costs ~1 s; on a GPU it allocates, and a graph that does
    not fit gives ``inf``.
    """
    shapes = _check_shapes(sym, shapes)
    ctx = device(ctx)
    grad_req = {name: ("null" if name in shapes else "write") for name in sym.list_arguments()}
    executor = _bind(sym, ctx, grad_req, shapes)
    if executor is None:
        return math.inf
    try:
        totals = [int(v) for v in _TOTAL_MB.findall(executor.debug_str())]
    finally:
        del executor
    if not totals:
        raise RuntimeError("MXNet's executor.debug_str() reported no 'Total N MB allocated' line")
    return float(sum(totals))


def activation_sizes(sym: mx.sym.Symbol, **shapes: Sequence[int]) -> list[int]:
    """Bytes of the visible outputs of each node of ``sym``, indexed like its JSON ``nodes``."""
    shapes = _check_shapes(sym, shapes)
    internals = sym.get_internals()
    out_shapes = internals.infer_shape(**shapes)[1]
    out_types = internals.infer_type(**{name: np.float32 for name in shapes})[1]  # as simple_bind
    out_types = out_types or [np.float32] * len(out_shapes)
    owner = [internals[i].name for i in range(len(out_shapes))]
    nodes = symbol_graph(sym)["nodes"]
    sizes, k = [], 0
    for node in nodes:
        total = 0
        while k < len(owner) and owner[k] == node["name"]:
            itemsize = np.dtype(out_types[k] or np.float32).itemsize
            total += int(np.prod(out_shapes[k])) * itemsize
            k += 1
        sizes.append(total)
    if k != len(owner):
        raise RuntimeError("could not match %d graph outputs to nodes (matched %d)"
                           % (len(owner), k))
    return sizes


def _candidates(nodes):
    """Indices of ops that may end a segment: tagged stage nodes, else every op."""
    ops = [i for i, n in enumerate(nodes) if n["op"] != "null"]
    tagged = [i for i in ops if _attr(nodes[i], STAGE_ATTR) == "True"]
    return set(tagged or ops)


def _attr(node, key):
    """Attribute ``key`` of a node of the symbol JSON (``attrs``; ``attr`` in old files)."""
    return (node.get("attrs") or node.get("attr") or {}).get(key)


def mirror_nodes(nodes: Sequence[Mapping[str, Any]], sizes: Sequence[int], candidates: Collection[int],
                 budget: float) -> tuple[set[int], int]:
    """Chen et al.'s budgeted segmentation (Algorithm 2) for one ``budget`` in bytes.

    Walks the ops in topological order accumulating output sizes; a candidate node
    reached once the running segment holds at least ``budget`` ends the segment and
    is kept, every other op is mirrored.  Returns (mirrored indices, model cost),
    cost = kept stage outputs + the largest segment (what is live during backward).
    """
    mirrored, kept_bytes, segment, largest = set(), 0, 0, 0
    for i, node in enumerate(nodes):
        if node["op"] == "null":
            continue
        segment += sizes[i]
        if i in candidates and segment >= budget:
            kept_bytes += sizes[i]
            largest = max(largest, segment)
            segment = 0
        elif not _RANDOM_OP.match(node["op"]):
            mirrored.add(i)
    largest = max(largest, segment)
    return mirrored, kept_bytes + largest


def _annotate(graph, mirrored):
    """A copy of the symbol JSON dict with ``MIRROR_ATTR`` set on ``mirrored`` node indices."""
    graph = json.loads(json.dumps(graph))
    heads = {h[0] for h in graph["heads"]}
    for i in mirrored:
        if i in heads:  # outputs are needed as outputs anyway
            continue
        node = graph["nodes"][i]
        node.setdefault("attrs", {})[MIRROR_ATTR] = "True"
    return graph


def mirrored_names(sym: mx.sym.Symbol) -> list[str]:
    """Names of the nodes of ``sym`` that carry ``__force_mirroring__='True'``."""
    return [n["name"] for n in symbol_graph(sym)["nodes"] if _attr(n, MIRROR_ATTR) == "True"]


def _without_plan(sym_json):
    """``sym_json`` with every ``__force_mirroring__`` attribute removed."""
    graph = json.loads(sym_json)
    for node in graph["nodes"]:
        for key in ("attrs", "attr"):
            if node.get(key):
                node[key].pop(MIRROR_ATTR, None)
                if not node[key]:
                    del node[key]
    return json.dumps(graph)


def _cache_key(sym_json, shapes, device_type="cpu"):
    text = json.dumps({"symbol": sym_json, "shapes": sorted(shapes.items()),
                       "mxnet": mx.__version__, "plan": PLAN_VERSION, "device": device_type},
                      sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _read_cache(path):
    try:
        with open(path) as f:
            entry = json.load(f)
        return mx.sym.load_json(entry["symbol"]), entry
    except FileNotFoundError:
        return None, None
    except (ValueError, KeyError, mx.base.MXNetError) as err:  # damaged: plan again, overwrite
        log.warning("memonger: ignoring unreadable plan cache %s (%s)", path, err)
        return None, None


def plan(sym: mx.sym.Symbol, /, cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
         ctx: mx.Context | Sequence[mx.Context] | None = None, **shapes: Sequence[int]) -> mx.sym.Symbol:
    """Return ``sym`` annotated for sublinear-memory training at the given input shapes.

    ``shapes`` are the per-device input shapes, e.g. ``plan(sym, data=(64, 3, 32, 32))``
    (label shapes are inferred when omitted).  Nodes inside each segment get
    ``__force_mirroring__='True'``; outputs and values are unchanged, only training
    memory drops.  ``ctx``: the training device(s) the plan is measured on (default the
    CPU; a GPU plan binds on that GPU, see the module docstring).  ``cache_dir`` (default
    :func:`default_cache_dir`; ``False`` turns the disk cache off) holds finished plans,
    per device type, so a rerun does not search again.
    Raises ``ValueError`` when the shapes are missing, name unknown inputs or leave
    shapes undetermined, ``common.UserError`` when the device cannot bind.
    """
    if not isinstance(sym, mx.sym.Symbol):
        raise ValueError("memonger.plan needs an mx.sym.Symbol, got %s" % type(sym).__name__)
    shapes = _check_shapes(sym, shapes)
    ctx = device(ctx)
    sym = mx.sym.load_json(_without_plan(sym.tojson()))  # planning a plan starts afresh
    sym_json = sym.tojson()
    key = _cache_key(sym_json, shapes, ctx.device_type)
    if key in _memory_cache:
        return mx.sym.load_json(_memory_cache[key])
    path = None
    if cache_dir is not False:
        path = os.path.join(cache_dir or default_cache_dir(), key + ".json")
        cached, entry = _read_cache(path)
        if cached is not None:
            log.info("memonger: %s plan for %s loaded from %s (%.0f MB -> %.0f MB)",
                     ctx.device_type, _describe(shapes), path, entry.get("mb_before", float("nan")),
                     entry.get("mb_after", float("nan")))
            _memory_cache[key] = entry["symbol"]
            return cached

    planned_json, budget, before, after = _search(sym, sym_json, shapes, ctx)
    log.info("memonger: %s training memory on %s %.0f MB -> %.0f MB (%.1f%%, segment budget "
             "%.1f MB)", _describe(shapes), ctx, before, after, 100.0 * after / before,
             budget / 2.0 ** 20)
    _memory_cache[key] = planned_json
    if path is not None:
        entry = {"plan_version": PLAN_VERSION, "mxnet": mx.__version__, "shapes": shapes,
                 "device": ctx.device_type,
                 "budget_bytes": budget, "mb_before": before, "mb_after": after,
                 "symbol": planned_json}
        common.atomic_write_text(path, json.dumps(entry))
    return mx.sym.load_json(planned_json)


def _search(sym, sym_json, shapes, ctx):
    """Pick the budget: cost model over a geometric grid, then the executor's estimate on
    ``ctx``."""
    graph = json.loads(sym_json)
    nodes = graph["nodes"]
    sizes = activation_sizes(sym, **shapes)
    candidates = _candidates(nodes)
    total = float(sum(sizes[i] for i, n in enumerate(nodes) if n["op"] != "null"))
    if total <= 0 or not candidates:
        raise ValueError("memonger: the symbol has no operators to plan")
    smallest = max(1.0, float(min(sizes[i] for i in candidates) or 1))
    steps = max(2, int(4 * math.log2(total / smallest)) + 1)
    grid = [smallest * (total / smallest) ** (k / (steps - 1.0)) for k in range(steps)]
    model_best = min(grid, key=lambda b: mirror_nodes(nodes, sizes, candidates, b)[1])

    before = allocated_mb(sym, ctx, **shapes)
    measured = {}  # frozenset of mirrored nodes -> (MB, budget, planned JSON)

    def measure(budget):
        mirrored, _ = mirror_nodes(nodes, sizes, candidates, budget)
        signature = frozenset(mirrored)
        if signature not in measured:
            planned_json = json.dumps(_annotate(graph, mirrored))
            mb = allocated_mb(mx.sym.load_json(planned_json), ctx, **shapes)
            log.debug("memonger: budget %.2f MB -> %.0f MB", budget / 2.0 ** 20, mb)
            measured[signature] = (mb, budget, planned_json)
        return measured[signature]

    best = min((measure(model_best * f) for f in _SEARCH_FACTORS), key=lambda m: m[0])
    for f in _REFINE_FACTORS:  # the estimate is not smooth in the budget: look between steps
        best = min(best, measure(best[1] * f), key=lambda m: m[0])
    if best[0] == math.inf:
        raise common.UserError("memonger: no plan fits %s for %s (every measured plan ran out "
                               "of memory); use a smaller per-device batch" % (ctx, _describe(shapes)))
    if best[0] >= before:
        raise ValueError("memonger found no plan that lowers training memory on %s below %.0f MB "
                         "for %s: the graph has too little between its stage nodes to recompute; "
                         "train it without memonger" % (ctx, before, _describe(shapes)))
    return best[2], best[1], before, best[0]


def _describe(shapes):
    return ", ".join("%s=%s" % (k, "x".join(map(str, v))) for k, v in sorted(shapes.items()))
