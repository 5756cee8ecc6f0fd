"""Which oneDNN kernels a training step of a symbol runs, and how much of it is slow code.

oneDNN picks one implementation per primitive and ISA.  With ``DNNL_VERBOSE=1`` it prints a
line per execution (oneDNN 2.4, the one inside mxnet 1.9.1)::

    dnnl_verbose,exec,cpu,<primitive>,<implementation>,<prop_kind>,<memory descs>,<attrs>,<aux>,<problem>,<ms>

e.g. ``...,pooling_v2,ref:any,backward_data,src_f32::blocked:acdB16b:f0 dst_f32::...``.
Implementations named ``ref`` (``ref:any``, ``bnorm_ref:any``, ...) are oneDNN's portable
reference loops, 10-100x slower than the JIT kernels; reorders convert between layouts
(plain ``abcd`` and blocked ``aBcd16b``...).  A graph choice can push a primitive onto a
``ref`` path on one ISA only (AVX-512 here, not AVX2), so this is measured, never assumed.

* :func:`parse_line` / :func:`parse` -- verbose lines to :class:`Execution` records.
* :func:`by_kind` -- ms (and convolution FLOPs) per primitive kind, for bench/step_profile.py.
* :func:`summarise` -- oneDNN time, ``ref`` share, reorder share, the worst primitives.
* :func:`measure` -- one (or more) training steps of each given symbol in ONE subprocess with
  ``DNNL_VERBOSE=1`` (``mx.mod.Module``, synthetic data, SGD), the executions split per step
  by markers the child prints after ``mx.nd.waitall()``.
* :func:`isa_flags` -- the CPU's vector-ISA flags, to name next to every figure.

The parser imports nothing heavy; MXNet is imported only in the measuring child.
"""
from __future__ import annotations

import collections
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mxcnn import common
from mxcnn.common.system import cpu_flags

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["Execution", "parse_line", "parse", "is_ref", "is_reorder", "kind", "conv_flops",
           "by_kind", "summarise", "format_summary", "measure", "onednn_isa", "isa_flags",
           "cpu_name", "AuditError"]

#: Printed by the measuring child between steps (``MARKER + json``).
MARKER = "KERNEL-AUDIT "
#: Vector-ISA flags of /proc/cpuinfo that decide oneDNN's kernels.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")

Execution = collections.namedtuple(
    "Execution", "primitive impl prop layouts aux problem ms")
Execution.__doc__ = ("One oneDNN primitive execution: ``layouts`` is the memory-descriptor field "
                     "(``src_f32::blocked:aBcd16b:f0 dst_f32::...``), ``ms`` its time.")

_PROBLEM = re.compile(r"([a-z]+)(\d+)")
_REF = re.compile(r"(^|[_:])ref([_:]|$)")


class AuditError(common.UserError):
    """The measuring child failed (the message names the symbol and the child's last line)."""


def parse_line(line: str) -> Execution | None:
    """An :class:`Execution` for a ``dnnl_verbose,exec,...`` line, else ``None``.

    Tolerates the optional timestamp field (``DNNL_VERBOSE_TIMESTAMP=1``) after the tag.
    """
    if not line.startswith("dnnl_verbose,"):
        return None
    fields = line.rstrip("\r\n").split(",")
    try:
        start = fields.index("exec", 1, 3)
    except ValueError:
        return None
    fields = fields[start + 1:]  # engine, primitive, impl, prop, mds, attrs, aux, problem, ms
    if len(fields) < 9:
        return None
    try:
        ms = float(fields[-1])
    except ValueError:
        return None
    return Execution(fields[1], fields[2], fields[3], fields[4], ",".join(fields[6:-2]),
                     fields[-2], ms)


def parse(lines: Iterable[str]) -> list[Execution]:
    """The :class:`Execution` records of ``lines`` (other output is skipped)."""
    return [record for record in map(parse_line, lines) if record is not None]


def is_ref(record: Execution) -> bool:
    """True for oneDNN's reference implementations (``ref:any``, ``bnorm_ref:any``, ...)."""
    return bool(_REF.search(record.impl))


def is_reorder(record: Execution) -> bool:
    return record.primitive == "reorder"


def _kind_of(primitive, prop):
    return primitive if prop in ("undef", "") else "%s %s" % (primitive, prop)


def kind(record: Execution) -> str:
    """``convolution backward_data``, ``reorder``, ...: primitive plus propagation kind."""
    return _kind_of(record.primitive, record.prop)


def conv_flops(problem: str) -> float:
    """FLOPs of one convolution execution from oneDNN's problem string (``mb..ic..oc..``)."""
    dims = {}
    for key, value in _PROBLEM.findall(problem):
        dims.setdefault(key, int(value))
    get = lambda key: dims.get(key, 1)  # noqa: E731
    groups = get("g")
    return 2.0 * get("mb") * get("ic") // groups * get("oc") * get("oh") * get("ow") * get("kh") * get("kw")


def by_kind(records: Iterable[Execution], steps: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """``({kind: ms per step}, {kind: convolution FLOP per step})`` over ``records``."""
    times, flops = collections.Counter(), collections.Counter()
    for record in records:
        times[kind(record)] += record.ms
        if record.primitive == "convolution":
            flops[kind(record)] += conv_flops(record.problem)
    return ({k: v / steps for k, v in times.items()}, {k: v / steps for k, v in flops.items()})


def _groups(records):
    """``{(primitive, impl, prop, layouts): group dict}`` of ``records`` (ms and calls summed)."""
    groups = collections.OrderedDict()
    for record in records:
        key = (record.primitive, record.impl, record.prop, record.layouts)
        group = groups.setdefault(key, {"primitive": record.primitive, "impl": record.impl,
                                        "prop": record.prop, "layouts": record.layouts,
                                        "problem": record.problem, "ms": 0.0, "calls": 0})
        group["ms"] += record.ms
        group["calls"] += 1
    return groups


def summarise(records: Sequence[Execution] | Sequence[list[Execution]], steps: int = 1,
              worst: int = 5) -> dict[str, Any]:
    """Per-step totals of ``records``: ``{"total_ms", "ref_ms", "reorder_ms", "ref_share",
    "reorder_share", "executions", "worst", "ref", "groups"}``.

    ``records``: the executions of ``steps`` steps, or a list of per-step lists (then
    ``steps`` is their number and each group's time is its *minimum* over the steps: a busy,
    shared machine only ever adds time, so the minimum is the least disturbed figure).
    ``groups``/``worst``/``ref``: every primitive group, the ``worst`` heaviest and every
    ``ref`` one, heaviest first, a group being the executions with one (primitive, impl,
    prop, layouts), as dicts with ``ms`` per step, ``calls`` per step and one example
    ``problem``.
    """
    if records and isinstance(records[0], list):
        per_step, steps = [_groups(step) for step in records], len(records)
        groups = _groups([r for step in records for r in step])
        for key, group in groups.items():
            group["ms"] = min(step.get(key, {"ms": 0.0})["ms"] for step in per_step)
            group["calls"] = group["calls"] / float(steps)
    else:
        groups = _groups(records)
        for group in groups.values():
            group["ms"] /= steps
            group["calls"] = group["calls"] / float(steps)
    total = sum(g["ms"] for g in groups.values())
    ref = sum(g["ms"] for g in groups.values() if _REF.search(g["impl"]))
    reorder = sum(g["ms"] for g in groups.values() if g["primitive"] == "reorder")
    ranked = sorted(groups.values(), key=lambda g: -g["ms"])
    return {"total_ms": total, "ref_ms": ref, "reorder_ms": reorder,
            "ref_share": ref / total if total else 0.0,
            "reorder_share": reorder / total if total else 0.0,
            "executions": sum(g["calls"] for g in groups.values()), "worst": ranked[:worst],
            "ref": [g for g in ranked if _REF.search(g["impl"])], "groups": ranked}


def format_summary(label: str, summary: Mapping[str, Any], worst: int | None = None) -> list[str]:
    """Lines of text for one audited step: a totals line (``label`` first), then the
    ``worst`` heaviest primitive groups (all that :func:`summarise` kept when ``None``)
    and every ``ref`` one, each with ms per step, share, calls per step, implementation,
    layouts and one example problem."""
    total = summary["total_ms"]
    lines = ["%s: %.1f ms in oneDNN per step, ref %.1f%%, reorders %.1f%%, %d executions"
             % (label, total, 100 * summary["ref_share"], 100 * summary["reorder_share"],
                summary["executions"])]
    shown = list(summary["worst"] if worst is None else summary["worst"][:worst])
    shown += [group for group in summary["ref"] if group not in shown]
    for group in shown:
        lines.append("    %8.2f ms %5.1f%% x%-5g %-36s %-24s %s  %s"
                     % (group["ms"], 100 * group["ms"] / total if total else 0.0, group["calls"],
                        _kind_of(group["primitive"], group["prop"]), group["impl"],
                        group["layouts"], group["problem"]))
    return lines


def isa_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has, in that order (empty when unreadable)."""
    have = cpu_flags(cpuinfo)
    return [flag for flag in ISA_FLAGS if flag in have]


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


# ----------------------------------------------------------------------------------------------
# measuring: one child process, DNNL_VERBOSE=1, markers between steps

def _top_package_dir():
    """The directory holding this module's top package (a checkout root or site-packages)."""
    top = sys.modules[__name__.split(".")[0]]
    return os.path.dirname(os.path.abspath(list(top.__path__)[0]))


def measure(jobs: Sequence[tuple[str, mx.sym.Symbol, Sequence[int]]], steps: int = 1, warmup: int = 1,
            env: Mapping[str, str] | None = None, timeout: float = 1800) -> list[dict[str, Any]]:
    """Audit one training step of each job; a list of :func:`summarise` dicts, in order.

    ``jobs``: ``(label, symbol, data_shape)`` with ``data_shape`` (N, C, H, W) of the input
    ``data``; every other argument ending in ``_label`` is a class-index label of shape (N,).
    All jobs run in one child (``mx.mod.Module``, ``for_training=True``, SGD with momentum)
    with ``DNNL_VERBOSE=1``; each runs ``warmup`` untimed steps (first executions pay one-time
    costs), then ``steps`` audited ones (summarised with :func:`summarise`: per primitive
    group, the minimum over the steps).  ``env`` updates the child's environment (thread
    counts ...).  Each summary also holds ``isa``: what oneDNN says it dispatches to.
    Raises :class:`AuditError` when the child fails.
    """
    with tempfile.TemporaryDirectory(prefix="kernel-audit-") as tmp:
        specs = []
        for index, (label, sym, data_shape) in enumerate(jobs):
            path = os.path.join(tmp, "%d-symbol.json" % index)
            sym.save(path, remove_amp_cast=False)  # keep a mixed-precision graph's casts
            specs.append({"label": label, "symbol": path, "data_shape": list(data_shape)})
        spec_path = os.path.join(tmp, "jobs.json")
        with open(spec_path, "w") as handle:
            json.dump({"jobs": specs, "steps": steps, "warmup": warmup}, handle)
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["DNNL_VERBOSE"] = "1"
        child_env["PYTHONPATH"] = os.pathsep.join(
            [_top_package_dir()] + [p for p in [child_env.get("PYTHONPATH")] if p])
        proc = subprocess.run([sys.executable, "-m", __name__, "--worker", spec_path],
                              env=child_env, capture_output=True, text=True, timeout=timeout)
    per_job = _split_steps(proc.stdout.splitlines(), len(jobs), steps, warmup)
    if proc.returncode != 0 or None in per_job:
        done = [job[0] for job, records in zip(jobs, per_job) if records is not None]
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AuditError("kernel audit child failed (exit %s) after %s: %s"
                         % (proc.returncode, ", ".join(done) or "no job", tail))
    isa = onednn_isa(proc.stdout.splitlines())
    return [dict(summarise(step_lists), isa=isa) for step_lists in per_job]


def onednn_isa(lines: Iterable[str]) -> str:
    """The ISA oneDNN reports it dispatches to (its ``dnnl_verbose,info,cpu,isa:`` line)."""
    for line in lines:
        if line.startswith("dnnl_verbose,info,cpu,isa:"):
            return line.strip().split("isa:", 1)[1]
    return "unknown"


def _split_steps(lines, count, steps, warmup):
    """Per job, the records of each audited step (``None`` when a job's markers are missing)."""
    per_job, current = [[] for _ in range(count)], []
    for line in lines:
        if line.startswith(MARKER):
            mark = json.loads(line[len(MARKER):])
            if mark["step"] >= warmup:
                per_job[mark["job"]].append(current)
            current = []
            continue
        record = parse_line(line)
        if record is not None:
            current.append(record)
    return [step_lists if len(step_lists) == steps else None for step_lists in per_job]


def _child_step(mx, sym, data_shape):
    """A ``step()`` that trains ``sym`` one synthetic batch with Module (the trainer's engine)."""
    labels = [name for name in sym.list_arguments() if name.endswith("_label")]
    batch = int(data_shape[0])
    mod = mx.mod.Module(sym, data_names=("data",), label_names=labels, context=mx.cpu())
    mod.bind(data_shapes=[("data", tuple(data_shape))],
             label_shapes=[(name, (batch,)) for name in labels], for_training=True)
    shapes = dict([("data", tuple(data_shape))] + [(name, (batch,)) for name in labels])
    arg_params, aux_params = _he_params(mx, sym, shapes)
    mod.init_params(arg_params=arg_params, aux_params=aux_params, force_init=True)
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9,
                                                          "wd": 1e-4})
    classes = int(mod.output_shapes[0][1][-1]) if mod.output_shapes else 10
    data = mx.nd.random.uniform(-1, 1, shape=tuple(data_shape))
    label = mx.nd.array([i % classes for i in range(batch)])
    dbatch = mx.io.DataBatch(data=[data], label=[label] * len(labels))

    def step():
        mod.forward_backward(dbatch)
        mod.update()
        mx.nd.waitall()
    return step


def _he_params(mx, sym, shapes):
    """He-normal weights, BatchNorm at identity, zero biases, for every parameter of ``sym``.

    Given explicitly, so no initializer named in a variable's ``__init__`` attribute (which
    only the process that built the symbol may have registered) is looked up.
    """
    mx.random.seed(0)
    arg_shapes, _, aux_shapes = sym.infer_shape(**shapes)
    arg_params = {}
    for name, shape in zip(sym.list_arguments(), arg_shapes):
        if name in shapes:
            continue
        if name.endswith("_gamma"):
            arg_params[name] = mx.nd.ones(shape)
        elif len(shape) > 1:
            fan_in = max(1, int(math.prod(shape[1:])))
            arg_params[name] = mx.nd.random.normal(0, (2.0 / fan_in) ** 0.5, shape=shape)
        else:
            arg_params[name] = mx.nd.zeros(shape)
    aux_params = {name: mx.nd.ones(shape) if name.endswith("_var") else mx.nd.zeros(shape)
                  for name, shape in zip(sym.list_auxiliary_states(), aux_shapes)}
    return arg_params, aux_params


def _worker(spec_path):
    import mxnet as mx
    with open(spec_path) as handle:
        spec = json.load(handle)
    for index, job in enumerate(spec["jobs"]):
        step = _child_step(mx, mx.sym.load(job["symbol"]), job["data_shape"])
        for number in range(spec["warmup"] + spec["steps"]):
            step()
            sys.stdout.flush()
            # oneDNN flushes each verbose line; this marker goes straight to the descriptor
            os.write(1, (MARKER + json.dumps({"job": index, "step": number}) + "\n").encode())
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    sys.exit("usage: python -m mxcnn.graph.kernel_audit --worker JOBS.json "
             "(bench/kernel_audit.py is the CLI)")
