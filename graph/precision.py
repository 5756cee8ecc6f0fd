"""Mixed-precision training graphs: float16 / bfloat16 compute, float32 master weights.

``training_symbol(sym, dtype)`` returns the graph to *bind* for training in ``dtype``; it
is MXNet's own AMP pass (``mx.contrib.amp.convert_symbol``, the symbolic half of MXNet's
AMP, Micikevicius et al. 2018) with these choices of ours on top:

* every input of the graph stays a float32 Variable: ``amp_cast`` nodes inside the graph
  round the weights for Convolution/FullyConnected on each forward and cast their gradients
  back, so the optimizer updates float32 weights (the "master weights") and checkpoints,
  ONNX export and inference see a plain float32 model;
* the layer computing each loss head's logits (the classifier's FullyConnected, or a
  deeply-supervised head's score convolution) is excluded, so the logits, the softmax and
  its gradient ``p - y`` stay float32 (the layer is <0.1% of the MACs of every CIFAR
  network here);
* the stem (a Convolution reading ``data``) stays float32: with 3 input channels oneDNN 2.4
  has no blocked bfloat16 kernel and runs a plain-layout GEMM (``x64:gemm:jit``, 6.7 ms
  against 0.17 ms in float32 at batch 4), whose plain output made the fused BatchNorm+ReLU
  after it (graph.fusion) back-propagate wrong gradients in PreAct, WRN, ResNeXt and
  MobileNet (tests/graph/test_precision.py::test_fusion_then_bfloat16_is_exact).  A stem
  whose images graph.channel_pad padded to 16 channels reads a Reshape, not ``data``, and
  runs in the low precision on blocked kernels;
* in a channel-padded graph, the marked channel Concats run in the low precision
  (``_padded_concats``).

What AMP's lists decide (mxnet/contrib/amp/lists/symbol_{bf16,fp16}.py): Convolution and
FullyConnected run in the low precision; BatchNorm is dtype-neutral, so it normalises the
low-precision activations in place but keeps gamma, beta and the moving mean/variance in
float32 (oneDNN and cuDNN accumulate its statistics in float32); ``SoftmaxOutput``,
``mean``, ``Flatten`` and the other overflow-prone ops run in float32; elementwise sums run
in the widest type of their inputs.

Contract: same ``list_arguments()``, ``list_auxiliary_states()`` and ``list_outputs()`` as
``sym``, every one of them float32 (asserted).  ``float32`` returns ``sym`` itself.

Order of passes: this must be the LAST rewrite of a training graph.  ``Symbol.tojson()``
(and so ``save``) drops ``amp_cast`` nodes by default (``remove_amp_cast=True``), so any
pass that round-trips the graph through JSON (``graph.fusion``, ``graph.global_pool``,
``graph.memonger``) silently turns a converted graph back into float32.  The same behaviour makes a converted
graph save as its float32 original.

float16 is for NVIDIA GPUs (MXNet's CPU kernels have no float16 GEMM: "FP16 gemm on cpu not
implemented"); bfloat16 is for CPUs with ``avx512_bf16`` (oneDNN's bf16 kernels; MXNet 1.9.1
has no bfloat16 GPU kernels).  ``check_supported`` says so before anything is bound.

AMX: oneDNN 2.4 keeps its AMX kernels off; ``DNNL_MAX_CPU_ISA=AVX512_CORE_AMX`` enables them
after ``request_amx_permission()``.  Not enabled by default: its convolutions then use
channels-last layouts that the fused BatchNorm+ReLU backward rejects ("could not create a
primitive descriptor iterator"), and unfused it did not beat the default bfloat16 path
(``bench/throughput.py --knobs bf16,bf16_no_fusion,bf16_amx``; README).

Loss scaling: none, as in MXNet's ``example/image-classification/common/fit.py``.  Both
engines back-propagate the *summed*, not averaged, per-sample loss (``SoftmaxOutput`` with
``normalization='null'``; the Gluon engine's per-sample loss vector), and divide by the batch
only in the float32 optimizer (``rescale_grad``): the low-precision backward already runs on
gradients batch-size times larger than a mean loss's, a static loss scale of the batch size.
bfloat16 has float32's exponent range and needs none.  MXNet's dynamic loss scaler
(``amp.init_trainer``) requires ``amp.init()``, which patches every ``mx.sym``/``mx.nd``
operator process-wide, and serves Gluon only; it is not used.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mxcnn import common
from mxcnn.common.system import cpu_flags, cpuinfo_field
from mxcnn.graph.channel_pad import SEGMENTS_ATTR as _CHANNEL_SEGMENTS
from mxcnn.graph.symbol_json import check_interface, symbol_graph

if TYPE_CHECKING:
    import mxnet as mx

DTYPES = ("float32", "float16", "bfloat16")
#: CPU flags (as /proc/cpuinfo spells them) oneDNN needs for native bfloat16 kernels.
BF16_FLAGS = ("avx512_bf16",)
#: Flags named in messages about this CPU's vector units.
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile")
CAST_OPS = ("amp_cast", "amp_multicast")
#: Between a loss head and the layer computing its logits: ops that only reshape or pool.
THROUGH_OPS = ("Flatten", "flatten", "Reshape", "reshape", "squeeze", "Pooling", "mean", "Dropout")
CLASSIFIER_OPS = ("FullyConnected", "Convolution")

#: ``--dtype auto``: the vendors whose avx512_bf16 cores ran oneDNN 2.4's bfloat16 training
#: faster than float32 (AMD Zen 4: 1.38-1.90x, Zen 5: 1.49-1.86x).  Intel's (Sapphire and
#: Emerald Rapids class) ran it at 0.73-0.78x (a bf16 dot product issues at half the FP32 FMA
#: rate there, and oneDNN 2.4 leaves AMX off), so ``auto`` keeps them in float32.
BF16_FASTER_VENDORS = ("AuthenticAMD",)

__all__ = ["DTYPES", "resolve_dtype", "training_symbol", "optimizer_params", "check_supported", "cpu_flags",
           "cast_count", "low_precision_ops", "float32_layers", "request_amx_permission"]


def resolve_dtype(dtype: str, contexts: Iterable[mx.Context | str], flags: Iterable[str] | None = None,
                  vendor: str | None = None, onednn: bool | None = None) -> tuple[str, str | None]:
    """``(dtype, why)``: ``dtype`` itself (``why`` None), or for ``"auto"`` the precision this
    machine trains fastest in: bfloat16 on CPU contexts whose CPU has avx512_bf16 and a vendor
    of :data:`BF16_FASTER_VENDORS` (with oneDNN on), float32 elsewhere; ``why`` says which.
    ``flags``/``vendor``/``onednn`` default to this machine's (parameters for tests)."""
    if dtype != "auto":
        return dtype, None
    flags = cpu_flags() if flags is None else frozenset(flags)
    vendor = cpuinfo_field("vendor_id") if vendor is None else vendor
    if _device_types(contexts) != {"cpu"}:
        return "float32", "GPUs train in float32 unless --dtype float16 is given"
    if not set(BF16_FLAGS) <= flags:
        return "float32", "this CPU has no avx512_bf16"
    if vendor not in BF16_FASTER_VENDORS:
        return "float32", ("this %s CPU runs bfloat16 slower than float32 in MXNet 1.9.1's oneDNN"
                           % (vendor or "unknown"))
    if not (_onednn_enabled() if onednn is None else onednn):
        return "float32", "MXNet's oneDNN backend is off"
    return "bfloat16", "this %s CPU has avx512_bf16, measured 1.4-1.9x float32" % vendor


#: Linux x86-64: ``arch_prctl`` syscall number and its request for an extended state
#: component (``ARCH_REQ_XCOMP_PERM``, Linux 5.16+), and the AMX tile data component.
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


def request_amx_permission() -> bool:
    """Ask Linux for the AMX tile state for this process; True when the kernel grants it.

    oneDNN 2.4 (mxnet 1.9.1) never asks, so with ``DNNL_MAX_CPU_ISA=AVX512_CORE_AMX`` its
    first tile instruction is a SIGILL.  Must run before oneDNN executes a primitive; a
    no-op returning False off Linux x86-64, without ``amx_tile`` or on kernels before 5.16.
    """
    import platform
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    if "amx_tile" not in cpu_flags():
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                              ctypes.c_ulong(_XFEATURE_XTILEDATA))
    except (OSError, AttributeError):
        return False
    return result == 0


def _check_dtype(dtype):
    if dtype not in DTYPES:
        raise common.UserError("--dtype %r is not supported; choose one of %s"
                               % (dtype, ", ".join(DTYPES)))


def _device_types(contexts):
    return {getattr(ctx, "device_type", str(ctx).split("(")[0]) for ctx in contexts}


def _onednn_enabled():
    if os.environ.get("MXNET_MKLDNN_ENABLED", "1").strip().lower() in ("0", "false"):
        return False
    import mxnet as mx
    return bool(mx.runtime.Features().is_enabled("MKLDNN"))


def check_supported(dtype: str, contexts: Iterable[mx.Context | str], flags: Iterable[str] | None = None,
                    onednn: bool | None = None) -> None:
    """Raise ``common.UserError`` (one line) unless every context can train in ``dtype``.

    ``contexts``: ``mx.Context`` objects (or ``"cpu"``/``"gpu"``).  ``flags``: the CPU flags
    (default ``cpu_flags()``); ``onednn``: whether MXNet's oneDNN backend is on (default:
    asked from MXNet); both are parameters so tests can fake a machine.
    """
    _check_dtype(dtype)
    if dtype == "float32":
        return
    kinds = _device_types(contexts)
    if dtype == "float16" and kinds - {"gpu"}:
        raise common.UserError(
            "--dtype float16 is for NVIDIA GPUs (train with --gpus 0[,1,...]): MXNet's CPU "
            "kernels have no float16 convolution; on a CPU use --dtype bfloat16 (needs "
            "avx512_bf16) or float32")
    if dtype == "bfloat16":
        if kinds - {"cpu"}:
            raise common.UserError(
                "--dtype bfloat16 runs on CPUs only in MXNet 1.9.1 (its bfloat16 kernels are "
                "oneDNN's); on GPUs use --dtype float16")
        _check_bf16_cpu(cpu_flags() if flags is None else frozenset(flags), onednn)


def _check_bf16_cpu(flags, onednn):
    missing = [flag for flag in BF16_FLAGS if flag not in flags]
    if missing:
        seen = ", ".join(flag for flag in ISA_FLAGS if flag in flags)
        raise common.UserError(
            "--dtype bfloat16 needs a CPU with %s (oneDNN's native bfloat16 kernels); this CPU "
            "has %s; use --dtype float32"
            % (", ".join(missing), seen or "none of " + "/".join(ISA_FLAGS)))
    if not (_onednn_enabled() if onednn is None else onednn):
        raise common.UserError(
            "--dtype bfloat16 needs MXNet's oneDNN backend, which is off (MXNET_MKLDNN_ENABLED=0 "
            "or a build without MKLDNN); unset it or use --dtype float32")


def optimizer_params(dtype: str) -> dict[str, Any]:
    """Extra optimizer keyword arguments for training in ``dtype`` (the user's own win).

    float16: ``multi_precision=True``, as MXNet's fit.py passes with ``--dtype float16``.  The
    graphs of ``training_symbol`` keep float32 weights, for which MXNet's optimizers ignore it;
    it keeps a float32 master copy where a symbol itself declares float16 weights (one built
    as MXNet's example builds them, with ``dtype='float16'``).  Otherwise nothing.
    """
    _check_dtype(dtype)
    return {"multi_precision": True} if dtype == "float16" else {}


def _graph(sym):
    return symbol_graph(sym, keep_amp_casts=True)


def cast_count(sym: mx.sym.Symbol) -> int:
    """Number of AMP cast nodes (``amp_cast``/``amp_multicast``) in ``sym``."""
    return sum(node["op"] in CAST_OPS for node in _graph(sym)["nodes"])


def _classifier_names(graph, loss_ops):
    """Names of the layers that compute the logits of each loss output head.

    From each head (an op in ``loss_ops``) back through the layers that only reshape or
    pool (``THROUGH_OPS``) to the first FullyConnected or Convolution: a classifier's dense
    layer, or a deeply-supervised head's 1x1 score convolution before its global pool.
    """
    nodes = graph["nodes"]
    names = []
    for head in graph["heads"]:
        node = nodes[head[0]]
        if node["op"] not in loss_ops or not node["inputs"]:
            continue
        node = nodes[node["inputs"][0][0]]
        while node["op"] in THROUGH_OPS and node["inputs"]:
            node = nodes[node["inputs"][0][0]]
        if node["op"] in CLASSIFIER_OPS:
            names.append(node["name"])
    return names


def _stem_names(graph, inputs):
    """Names of the Convolutions that read a fed input (``data``) directly: the stems."""
    nodes = graph["nodes"]
    return [node["name"] for node in nodes if node["op"] == "Convolution" and node["inputs"]
            and nodes[node["inputs"][0][0]]["op"] == "null"
            and nodes[node["inputs"][0][0]]["name"] in inputs]


def float32_layers(sym: mx.sym.Symbol) -> list[str]:
    """Names of the layers ``training_symbol`` keeps in float32: stems and logit layers."""
    from mxnet.contrib import amp
    graph = _graph(sym)
    return (_stem_names(graph, _fed_inputs(sym))
            + _classifier_names(graph, amp.list_loss_output_functions("float16")))


def _fed_inputs(sym):
    """Inputs that are fed, not learned: ``data`` and the ``*_label`` Variables."""
    return [name for name in sym.list_inputs() if name == "data" or name.endswith("_label")]


def training_symbol(sym: mx.sym.Symbol, dtype: str) -> mx.sym.Symbol:
    """The graph to bind for training ``sym`` in ``dtype`` (module docstring: the contract)."""
    _check_dtype(dtype)
    if dtype == "float32":
        return sym
    from mxnet.contrib import amp
    graph = _graph(sym)
    if any(node["op"] in CAST_OPS for node in graph["nodes"]):
        raise ValueError("the symbol already carries AMP casts; convert the float32 graph once")
    target = amp.amp.bfloat16 if dtype == "bfloat16" else dtype
    inputs = _fed_inputs(sym)
    excluded = (_stem_names(graph, inputs)
                + _classifier_names(graph, amp.list_loss_output_functions(target)))
    converted = _convert(amp, sym, dtype, inputs, excluded, graph)
    _check_interface(sym, converted)
    return converted


#: MXNet's message when AMP's pass leaves a Concat with float32 and low-precision inputs.
_MIXED_CONCAT = re.compile(r"Error in operator (\S+?): .*Non-uniform data type in Concat.*"
                           r"for input (\d+)", re.S)
#: Enough repairs for every registered network (Inception-ResNet-v2 needs two).
_MAX_REPAIRS = 8


def _convert(amp, sym, dtype, inputs, excluded, graph):
    """``amp.convert_symbol``, repairing the mixed Concats its pass leaves in MXNet 1.9.1.

    The pass types a dtype-neutral Pooling as low precision when its float32 input also
    feeds a low-precision layer, but wires it to the float32 tensor: GoogLeNet's CIFAR
    stem and Inception-ResNet-v2's float32 trunk (its ``_mul_scalar`` residual scaling is
    a float32 op) then reach a Concat with mixed inputs, which the pass refuses.  The
    repair: pin that Pooling to float32 and let Concat cast to its widest input type.
    Graphs that convert cleanly are converted exactly as before.
    """
    import mxnet as mx
    target_ops, float32_concats = _padded_concats(graph, dtype)
    excluded = list(excluded) + float32_concats
    pinned = []
    for _ in range(_MAX_REPAIRS):
        try:
            with _concat_as_widest_cast(amp.amp, enabled=bool(pinned)):
                return amp.convert_symbol(sym, target_dtype=dtype, data_names=inputs,
                                          target_dtype_ops=target_ops,
                                          excluded_sym_names=excluded + pinned)
        except mx.base.MXNetError as err:
            match = _MIXED_CONCAT.search(str(err))
            pool = match and _pool_feeding(graph, match.group(1), int(match.group(2)))
            if not pool or pool in pinned:
                raise
            pinned.append(pool)
    raise AssertionError("AMP conversion still leaves a mixed Concat; this is a bug")


def _padded_concats(graph, dtype):
    """``(low-precision ops, names to keep in float32)`` for a channel-padded graph
    (graph.channel_pad), ``(None, [])`` for any other.

    There the channel concatenations (marked by the pass) join 16-aligned pieces in oneDNN's
    blocked layout and feed BatchNorms: in the low precision they move half the bytes, and
    the float32 stem's output is cast down rather than every piece cast up (the widest-type
    repair).  AMP lists ops by type, so the pass's other Concats, which assemble padded
    float32 parameters, are excluded by name."""
    concats = [node for node in graph["nodes"] if node["op"] in ("Concat", "concat")]
    if not any(_CHANNEL_SEGMENTS in node.get("attrs", {}) for node in concats):
        return None, []
    from mxnet.contrib import amp
    ops = list(amp.list_lp16_ops(amp.amp.bfloat16 if dtype == "bfloat16" else dtype))
    ops += ["Concat", "concat"]
    return ops, [node["name"] for node in concats if _CHANNEL_SEGMENTS not in node.get("attrs", {})]


def _pool_feeding(graph, concat, index):
    """Name of the first Pooling on input ``index`` of the Concat named ``concat``, walking
    back along first inputs for at most six nodes (a branch's activation, BN and conv before
    its pool), or None."""
    nodes = graph["nodes"]
    by_name = {node["name"]: node for node in nodes}
    node = by_name.get(concat)
    if node is None or node["op"] not in ("Concat", "concat") or index >= len(node["inputs"]):
        return None
    node = nodes[node["inputs"][index][0]]
    for _ in range(6):
        if node["op"] == "Pooling":
            return node["name"]
        if node["op"] == "null" or not node["inputs"]:
            return None
        node = nodes[node["inputs"][0][0]]
    return None


@contextlib.contextmanager
def _concat_as_widest_cast(amp_module, enabled=True):
    """AMP with Concat among its widest-type ops, as its float16 lists have it: a Concat whose
    inputs mix float32 and bfloat16 then concatenates in float32 (``amp_multicast``).  Only
    while repairing (``_convert``): elsewhere the extra ``amp_multicast`` nodes would only
    add reorders between Concat and oneDNN's blocked layouts."""
    original = amp_module.list_widest_type_cast
    if enabled:
        amp_module.list_widest_type_cast = lambda target: list(original(target)) + ["Concat",
                                                                                    "concat"]
    try:
        yield
    finally:
        amp_module.list_widest_type_cast = original


def _check_interface(sym, converted):
    """Names unchanged and every argument, auxiliary state and output float32."""
    import numpy as np
    check_interface(sym, converted, "AMP conversion")
    fed = {name: "float32" for name in _fed_inputs(sym)}
    arg_types, out_types, aux_types = converted.infer_type(**fed)
    if arg_types is None or any(t != np.float32 for t in arg_types + out_types + aux_types):
        raise AssertionError("AMP conversion left a parameter, state or output not float32; "
                             "this is a bug")


def low_precision_ops(sym: mx.sym.Symbol, dtype: str) -> dict[str, int]:
    """``{op: count}`` of the operators whose output is ``dtype`` in ``sym`` (casts excluded).

    Type inference from float32 inputs; for logs and tests (what actually runs in ``dtype``).
    """
    import numpy as np
    from mxnet.contrib import amp
    target = amp.amp.bfloat16 if dtype == "bfloat16" else np.dtype(dtype).type
    graph = _graph(sym)
    internals = sym.get_internals()
    _, out_types, _ = internals.infer_type(**{name: "float32" for name in _fed_inputs(sym)})
    op_of = {}
    for node in graph["nodes"]:
        if node["op"] != "null":
            op_of[node["name"]] = node["op"]
    counts = {}
    for name, dtype_ in zip(internals.list_outputs(), out_types or []):
        node = name.rsplit("_output", 1)[0]
        op = op_of.get(node)
        if op and op not in CAST_OPS and dtype_ == target:
            counts[op] = counts.get(op, 0) + 1
    return counts
