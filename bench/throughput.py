"""Training throughput of this project against raw MXNet Module, GluonCV and PyTorch.

    python bench/throughput.py                       # full table, ~15-25 min on 2 cores
    python bench/throughput.py --nets resnet20 --repeats 2      # a quick look
    python bench/throughput.py --knobs               # each runtime knob's ratio (ResNet-20)
    python bench/throughput.py --torch-python /path/to/venv/bin/python

Every measurement trains on one fixed synthetic batch (batch 128, 3x32x32, SGD momentum)
in a fresh subprocess with its own environment; the configurations are interleaved and the
whole round repeated, and the table prints medians with paired ratios (median over the
repeats of the per-round ratio), which cancels most of the drift of a shared machine.

Configurations (all with OMP_NUM_THREADS = usable cores unless a knob says otherwise):

* ``ours``      -- ``train.fit.benchmark`` (what ``train_cifar.py --benchmark 1`` runs) after
  ``mxcnn.common.runtime.configure()``: the project's training path with its defaults.
* ``module``    -- raw ``mx.mod.Module`` on the same symbol (``symbols.get_symbol``) with
  MXNet's own defaults (no runtime knobs).
* ``gluoncv``   -- GluonCV's model, hybridized (static_alloc/static_shape), autograd +
  ``gluon.Trainer``, MXNet defaults.  None exists for PreAct-164 (GluonCV's v2 CIFAR
  ResNets are basic-unit only) and DenseNet-BC.
* ``ours_bf16`` -- ``ours`` in bfloat16 (``train_cifar.py --dtype bfloat16``: graph.precision,
  float32 master weights).  Only on CPUs with avx512_bf16 (graph.precision.check_supported).
* ``torch`` / ``torch_cl`` -- the same architecture in PyTorch (bench/torch_models.py), eager,
  NCHW and channels_last.
* ``torch_bf16`` -- PyTorch with ``torch.autocast("cpu", dtype=torch.bfloat16)`` and
  channels_last, float32 master weights; only where ``ours_bf16`` runs.  The table's bf16 ratio
  is ours_bf16/torch_bf16, and ``bf16/fp32`` is ours_bf16/ours.  GluonCV refuses to import
  when torch >= 2 is installed beside it, so PyTorch runs from its own interpreter:
  ``--torch-python`` or $MXCNN_TORCH_PYTHON
  (default: .venv-torch/bin/python in the checkout, if present).

GFLOP/s counts training as 3 x forward FLOPs = 3 x 2 x MACs (graph.inspector) per image; the
peak is the FP32 FMA throughput bench/cpu_peak.c measures with every core busy
(bench/_common.cpu_peak; without a C compiler, the nominal cores x clock x lanes x 2 x FMA units).
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common  # noqa: E402
import _mxnet_steps  # noqa: E402

#: bench name -> (label, network, num_layers, options, GluonCV model or None)
NETS = {
    "resnet20": ("ResNet-20", "resnet", 20, {}, ("cifar_resnet20_v1", {})),
    "resnet56": ("ResNet-56", "resnet", 56, {}, ("cifar_resnet56_v1", {})),
    "preact164": ("PreAct-164", "preact_resnet", 164, {}, None),
    "wrn16_4": ("WRN-16-4", "wrn", 16, {"widen_factor": 4},
                ("get_cifar_wide_resnet", {"num_layers": 16, "width_factor": 4})),
    "densenet100": ("DenseNet-BC-100-12", "densenet", 100, {"growth_rate": 12}, None),
}
#: Networks measured with --knobs only (no peer models): same fields as NETS.
KNOB_NETS = {
    "airbench94": ("airbench94 (--preset fast)", "airbench", None, {}, None),
    "airbench95": ("airbench95 (--preset fast92)", "airbench", None,
                   {"widths": (128, 384, 384)}, None),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2", None, {}, None),
    "googlenet": ("GoogLeNet", "googlenet", None, {}, None),
}
CONFIGS = ("ours", "module", "gluoncv", "torch", "torch_cl", "ours_bf16", "torch_bf16")
#: Configurations that train in bfloat16 (skipped on CPUs without avx512_bf16).
BF16_CONFIGS = ("ours_bf16", "torch_bf16")
#: Training GFLOPs one measurement aims at (sets the batch count per network).
WORK_GFLOP = 500.0
MEASURE_TIMEOUT = 900

#: --knobs: name -> (what it changes, env changes relative to ours (None deletes),
#: fit.benchmark keyword arguments)
KNOBS = {
    "omp_default": ("OMP_NUM_THREADS unset (MXNet's default threads)", {"OMP_NUM_THREADS": None}, None),
    "omp_1": ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}, None),
    "onednn_off": ("MXNET_MKLDNN_ENABLED=0", {"MXNET_MKLDNN_ENABLED": "0"}, None),
    "subgraph_none": ("MXNET_SUBGRAPH_BACKEND=NONE", {"MXNET_SUBGRAPH_BACKEND": "NONE"}, None),
    "bulk_off": ("MXNET_EXEC_BULK_EXEC_TRAIN=0", {"MXNET_EXEC_BULK_EXEC_TRAIN": "0"}, None),
    "bulk_big": ("MXNET_EXEC_BULK_EXEC_MAX_NODE_TRAIN_FWD/BWD=60",
                 {"MXNET_EXEC_BULK_EXEC_MAX_NODE_TRAIN_FWD": "60",
                  "MXNET_EXEC_BULK_EXEC_MAX_NODE_TRAIN_BWD": "60"}, None),
    "workers_2": ("MXNET_CPU_WORKER_NTHREADS=2", {"MXNET_CPU_WORKER_NTHREADS": "2"}, None),
    "naive_engine": ("MXNET_ENGINE_TYPE=NaiveEngine", {"MXNET_ENGINE_TYPE": "NaiveEngine"}, None),
    "proc_bind": ("OMP_PROC_BIND=true", {"OMP_PROC_BIND": "true"}, None),
    "wait_passive": ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "agg_1": ("MXNET_OPTIMIZER_AGGREGATION_SIZE=1 (one update op per parameter)",
              {"MXNET_OPTIMIZER_AGGREGATION_SIZE": "1"}, None),
    "agg_60": ("MXNET_OPTIMIZER_AGGREGATION_SIZE=60", {"MXNET_OPTIMIZER_AGGREGATION_SIZE": "60"}, None),
    "gluon": ("hybridized Gluon engine instead of Module", {}, {"engine": "gluon"}),
    "no_fusion": ("no BatchNorm+ReLU fusion (graph.fusion; train_cifar.py --no-fusion)", {},
                  {"fuse": False}),
    "no_global_pool": ("global pooling left to oneDNN's Pooling (no graph.global_pool rewrite)",
                       {}, {"rewrites": ("layout_barrier", "channel_pad", "fusion")}),
    "no_channel_pad": ("channels left unpadded (no graph.channel_pad rewrite: DenseNet's "
                       "concatenations, AVX-512's 8-blocked convolutions)", {},
                       {"rewrites": ("global_pool", "layout_barrier", "fusion")}),
    "no_rewrites": ("none of the oneDNN graph rewrites (the graph as built)", {},
                    {"rewrites": ()}),
    "bf16": ("--dtype bfloat16 (graph.precision; CPUs with avx512_bf16)", {},
             {"dtype": "bfloat16"}),
    "bf16_no_fusion": ("--dtype bfloat16 --no-fusion", {}, {"dtype": "bfloat16", "fuse": False}),
    # oneDNN 2.4 keeps AMX off; allowing it needs the kernel's permission first (the worker
    # asks, graph.precision.request_amx_permission), and the fused BatchNorm+ReLU backward
    # cannot take the channels-last layouts of its convolutions, so it runs unfused.
    "bf16_amx": ("--dtype bfloat16 --no-fusion, DNNL_MAX_CPU_ISA=AVX512_CORE_AMX (AMX tiles)",
                 {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}, {"dtype": "bfloat16", "fuse": False}),
}
#: Knobs that train in bfloat16 (skipped on CPUs without avx512_bf16).
BF16_KNOBS = ("bf16", "bf16_no_fusion", "bf16_amx")
#: Variables a knob may touch: removed from every measurement's environment first, so only
#: the configuration decides them.
MANAGED = sorted({key for _, changes, _ in KNOBS.values() for key in changes} | {"KMP_AFFINITY"})


class BenchError(Exception):
    """Bad options or an unusable setup; the CLI prints it as one line."""


# ----------------------------------------------------------------------------------------------
# measuring subprocesses (run with --worker SPEC)

def run_worker(spec):
    """Measure one configuration in this process; print ``RESULT_TAG`` + JSON."""
    if os.environ.get("DNNL_MAX_CPU_ISA", "").upper() == "AVX512_CORE_AMX":
        from mxcnn.graph import precision  # before oneDNN runs anything: without it, SIGILL
        if not precision.request_amx_permission():
            raise BenchError("Linux did not grant the AMX tile state (arch_prctl "
                             "ARCH_REQ_XCOMP_PERM; needs amx_tile and Linux 5.16+)")
    if spec["config"] in ("ours", "ours_bf16"):
        from mxcnn.common import runtime
        runtime.configure()
    import mxnet as mx
    net, batch_size, batches = spec["net"], spec["batch_size"], spec["batches"]
    if spec["config"] in ("ours", "ours_bf16", "knob"):
        from mxcnn.train import fit
        sym = _mxnet_steps.symbol(net_entry(net))
        options = dict(spec.get("options") or {})
        if spec["config"] == "ours_bf16":
            options["dtype"] = "bfloat16"
        engine = options.pop("engine", fit.DEFAULT_ENGINE)
        start = time.perf_counter()
        img_s = fit.benchmark(sym, batch_size, num_batches=batches, engine=engine, warmup=2, **options)
        result = {"img_s": img_s, "batches": batches, "engine": engine,
                  "seconds": batches * batch_size / img_s, "wall": time.perf_counter() - start}
    elif spec["config"] == "module":
        step, sync = _mxnet_steps.module_step(_mxnet_steps.symbol(NETS[net]), batch_size)
        result = _common.time_steps(step, sync, batch_size, batches)
    elif spec["config"] == "gluoncv":
        step, sync = _mxnet_steps.gluoncv_step(NETS[net][4], batch_size)
        result = _common.time_steps(step, sync, batch_size, batches)
    else:
        raise BenchError("unknown configuration %r" % spec["config"])
    result["mxnet"] = mx.__version__
    print(_common.RESULT_TAG + json.dumps(result))


# ----------------------------------------------------------------------------------------------
# the driver

def base_env(threads):
    """This environment without the managed knobs, with OMP_NUM_THREADS=threads."""
    env = {k: v for k, v in os.environ.items() if k not in MANAGED}
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def knob_env(threads, changes):
    """ours' environment (runtime.DEFAULTS, threads) with one knob's ``changes`` applied."""
    from mxcnn.common import runtime
    env = base_env(threads)
    env.update(runtime.DEFAULTS)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def measure(argv, env, timeout=MEASURE_TIMEOUT):
    """Run one measuring subprocess; its result dict, or ``{"error": ...}``."""
    try:
        proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %d s" % timeout}
    except OSError as exc:
        return {"error": "cannot run %s: %s" % (argv[0], exc.strerror)}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_common.RESULT_TAG):
            return json.loads(line[len(_common.RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
    return {"error": tail[:200]}


def torch_python(explicit=None):
    """The interpreter that runs the PyTorch measurements, or None."""
    candidates = [explicit, os.environ.get("MXCNN_TORCH_PYTHON"),
                  os.path.join(ROOT, ".venv-torch", "bin", "python")]
    for path in candidates:
        if path and os.path.exists(path):
            return path
    if explicit:
        raise BenchError("--torch-python %s does not exist" % explicit)
    return None


def batches_for(macs, batch_size, explicit=None):
    """Timed batches per measurement: ``explicit``, else about WORK_GFLOP of training work."""
    if explicit:
        return explicit
    per_batch = 6.0 * macs * batch_size / 1e9
    return max(_common.MIN_STEPS, int(round(WORK_GFLOP / per_batch)))


def forward_macs(net):
    """Forward multiply-accumulates per 3x32x32 image (graph.inspector)."""
    from mxcnn.graph import inspector as sym_inspect
    return sym_inspect.summarize(_mxnet_steps.symbol(net_entry(net)), data=(1, 3, 32, 32)).total_macs


def net_entry(net):
    """The NETS or KNOB_NETS entry of ``net``."""
    return NETS[net] if net in NETS else KNOB_NETS[net]


def bf16_unsupported():
    """Why this CPU cannot run the bfloat16 configurations, or None when it can."""
    from mxcnn.graph import precision
    try:
        precision.check_supported("bfloat16", ["cpu"], onednn=True)
    except ValueError as exc:  # common.UserError
        return str(exc)
    return None


def _cpu_flags():
    from mxcnn.graph import precision
    return precision.cpu_flags()


def plan(nets, configs, batch_size, batches, threads, torch_py):
    """[(net, config, argv, env)] for one round."""
    jobs = []
    for net in nets:
        for config in configs:
            if config == "gluoncv" and NETS[net][4] is None:
                continue
            if config.startswith("torch"):
                if torch_py is None:
                    continue
                argv = [torch_py, os.path.join(HERE, "torch_models.py"), "--net", net,
                        "--batch-size", str(batch_size), "--batches", str(batches[net])]
                if config == "torch_cl":
                    argv.append("--channels-last")
                elif config == "torch_bf16":
                    argv += ["--channels-last", "--bf16"]
                env = base_env(threads)
            else:
                spec = {"config": config, "net": net, "batch_size": batch_size,
                        "batches": batches[net]}
                argv = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
                env = base_env(threads)
            jobs.append((net, config, argv, env))
    return jobs


def plan_knobs(nets, knobs, batch_size, batches, threads):
    jobs = []
    for net in nets:
        for knob in ("defaults",) + tuple(knobs):
            changes, options = ({}, None) if knob == "defaults" else KNOBS[knob][1:]
            spec = {"config": "knob", "net": net, "batch_size": batch_size,
                    "batches": batches[net], "options": options}
            argv = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
            jobs.append((net, knob, argv, knob_env(threads, changes)))
    return jobs


def run_rounds(jobs, repeats, log):
    """Run every job once per round, rounds in turn; ``{(net, config): [result per round]}``."""
    results = {}
    total = len(jobs) * repeats
    done = 0
    for round_ in range(repeats):
        order = jobs if round_ % 2 == 0 else list(reversed(jobs))  # alternate to cancel drift
        for net, config, argv, env in order:
            result = measure(argv, env)
            results.setdefault((net, config), [None] * repeats)[round_] = result
            done += 1
            shown = ("%.1f img/s" % result["img_s"]) if "img_s" in result else result["error"]
            log("[%d/%d] round %d %-11s %-9s %s" % (done, total, round_ + 1, net, config, shown))
    return results


def _speeds(results, key):
    return [r.get("img_s") if r else None for r in results.get(key, [])]


def paired_ratio(results, num_key, den_keys):
    """Median over rounds of num / max(den over den_keys) in the same round."""
    nums = _speeds(results, num_key)
    dens = [_speeds(results, k) for k in den_keys]
    ratios = []
    for i, num in enumerate(nums):
        values = [d[i] for d in dens if i < len(d) and d[i]]
        if num and values:
            ratios.append(num / max(values))
    return _common.median(ratios) if ratios else None


def _fmt_speed(values):
    values = [v for v in values if v]
    if not values:
        return "-"
    return "%.1f" % _common.median(values)


def _fmt_ratio(value):
    return "-" if value is None else "%.2fx" % value


def format_table(results, nets, macs, peak, batch_size, configs):
    header = ["network", "MMAC", "ours", "module", "gluoncv", "torch", "torch_cl", "ours_bf16",
              "torch_bf16", "ours/module", "ours/gluoncv", "ours/best-torch", "bf16 ours/torch",
              "bf16/fp32", "GFLOP/s", "%peak"]
    rows = [header]
    for net in nets:
        speeds = {c: _speeds(results, (net, c)) for c in configs}
        ours = [v for v in speeds.get("ours", []) if v]
        gflops = _common.median(ours) * 6.0 * macs[net] / 1e9 if ours else None
        rows.append([NETS[net][0], "%.1f" % (macs[net] / 1e6)]
                    + [_fmt_speed(speeds.get(c, [])) for c in CONFIGS]
                    + [_fmt_ratio(paired_ratio(results, (net, "ours"), [(net, "module")])),
                       _fmt_ratio(paired_ratio(results, (net, "ours"), [(net, "gluoncv")])),
                       _fmt_ratio(paired_ratio(results, (net, "ours"),
                                               [(net, "torch"), (net, "torch_cl")])),
                       _fmt_ratio(paired_ratio(results, (net, "ours_bf16"), [(net, "torch_bf16")])),
                       _fmt_ratio(paired_ratio(results, (net, "ours_bf16"), [(net, "ours")])),
                       "-" if gflops is None else "%.1f" % gflops,
                       "-" if gflops is None or not peak else "%.0f%%" % (100.0 * gflops / peak)])
    return _columns(rows)


def format_knobs(results, nets, knobs):
    rows = [["network", "knob", "img/s", "vs defaults", "what"]]
    for net in nets:
        rows.append([net_entry(net)[0], "defaults", _fmt_speed(_speeds(results, (net, "defaults"))),
                     "1.00x", "common/runtime.py DEFAULTS + OMP_NUM_THREADS=cores"])
        for knob in knobs:
            rows.append(["", knob, _fmt_speed(_speeds(results, (net, knob))),
                         _fmt_ratio(paired_ratio(results, (net, knob), [(net, "defaults")])),
                         KNOBS[knob][0]])
    return _columns(rows)


def _columns(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _load():
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "?"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bench/throughput.py",
        description="Training img/s of this project vs raw MXNet Module, GluonCV and PyTorch "
                    "(interleaved, repeated, medians and paired ratios).")
    parser.add_argument("--nets", default=None,
                        help="comma-separated subset of %s (default: all; with --knobs: resnet20, "
                             "and also %s)" % (",".join(NETS), ",".join(KNOB_NETS)))
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated subset of %s" % ",".join(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--batches", type=int,
                        help="timed batches per measurement (default: ~%d training GFLOP worth)"
                             % WORK_GFLOP)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS (default: usable cores)")
    parser.add_argument("--torch-python", help="interpreter with torch installed "
                                               "(default: $MXCNN_TORCH_PYTHON or .venv-torch/bin/python)")
    parser.add_argument("--knobs", nargs="?", const=",".join(KNOBS), default=None,
                        help="instead of the table, measure each runtime knob against the "
                             "defaults (optionally a comma-separated subset of %s)" % ",".join(KNOBS))
    parser.add_argument("--peak-gflops", type=float, help="override the computed FP32 peak")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def _choices(text, allowed, what):
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in allowed]
    if unknown or not chosen:
        raise BenchError("unknown %s %s; choose from %s" % (what, ", ".join(unknown) or "(none)",
                                                            ", ".join(allowed)))
    return chosen


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return 0
    try:
        return _drive(args)
    except BenchError as exc:
        sys.stderr.write("throughput.py: %s\n" % exc)
        return 2


def _drive(args):
    if args.repeats < 1 or (args.batches is not None and args.batches < 1) or args.batch_size < 1:
        raise BenchError("--repeats, --batches and --batch-size must be positive")
    allowed = list(NETS) + (list(KNOB_NETS) if args.knobs else [])
    nets = _choices(args.nets or ("resnet20" if args.knobs else ",".join(NETS)), allowed, "net")
    threads = args.threads or _common.usable_cores()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    macs = {net: forward_macs(net) for net in nets}
    batches = {net: batches_for(macs[net], args.batch_size, args.batches) for net in nets}
    peak, peak_note = _common.cpu_peak()
    if args.peak_gflops:
        peak, peak_note = args.peak_gflops, "FP32 peak %.0f GFLOP/s (given)" % args.peak_gflops
    started, load_start = time.time(), _load()
    if args.knobs:
        knobs = _choices(args.knobs, list(KNOBS), "knob")
        no_bf16 = bf16_unsupported() if any(k in BF16_KNOBS for k in knobs) else None
        if no_bf16:
            log("note: bfloat16 knobs skipped: " + no_bf16)
            knobs = [k for k in knobs if k not in BF16_KNOBS]
        if "bf16_amx" in knobs and "amx_tile" not in _cpu_flags():
            log("note: knob bf16_amx skipped: this CPU has no amx_tile")
            knobs.remove("bf16_amx")
        jobs = plan_knobs(nets, knobs, args.batch_size, batches, threads)
    else:
        configs = _choices(args.configs, list(CONFIGS), "configuration")
        torch_py = torch_python(args.torch_python) if any(c.startswith("torch") for c in configs) else None
        if torch_py is None and any(c.startswith("torch") for c in configs):
            log("note: no interpreter with torch (pass --torch-python); PyTorch columns skipped")
        no_bf16 = bf16_unsupported() if any(c in BF16_CONFIGS for c in configs) else None
        if no_bf16:
            log("note: bfloat16 columns skipped: " + no_bf16)
            configs = [c for c in configs if c not in BF16_CONFIGS]
        jobs = plan(nets, configs, args.batch_size, batches, threads, torch_py)
    results = run_rounds(jobs, args.repeats, log)
    minutes = (time.time() - started) / 60.0
    print("Training throughput, img/s (median of %d interleaved rounds), batch %d, synthetic "
          "3x32x32, OMP_NUM_THREADS=%d, %s" % (args.repeats, args.batch_size, threads,
                                               "batches per run: " + ", ".join(
                                                   "%s %d" % (n, batches[n]) for n in nets)))
    print("load average %s at start, %s at end; %.1f min" % (load_start, _load(), minutes))
    if args.knobs:
        print(format_knobs(results, nets, knobs))
    else:
        print(format_table(results, nets, macs, peak, args.batch_size, configs))
        print("GFLOP/s = ours img/s x 3 x 2 x MACs; " + peak_note)
    errors = sorted({"%s %s: %s" % (k[0], k[1], r["error"]) for k, rs in results.items()
                     for r in rs if r and "error" in r})
    for line in errors:
        print("failed: " + line)
    if args.json:
        from mxcnn.common import atomic_write_text
        atomic_write_text(args.json, json.dumps(
            {"nets": nets, "macs": macs, "batches": batches, "peak_gflops": peak,
             "results": {"%s/%s" % k: v for k, v in results.items()}}, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
