"""Training memory and speed of PreAct ResNets with and without the memonger plan.

    python bench/memonger.py                      # the table below (several minutes)
    python bench/memonger.py --plot docs/memonger_depth.png   # memory against depth
    python bench/memonger.py --engine gluon --only 164x64    # hybridized SymbolBlock path

Each configuration trains a few SGD steps on synthetic CIFAR batches in a fresh
subprocess, so its peak RSS (``ru_maxrss``) is its own; "alloc MB" is the executor's
estimate (debug_str "Total N MB allocated", :func:`graph.memonger.allocated_mb`).
Plans are searched once in this process and reach the children through the plan cache.
Targets (Chen et al. 2016 on this machine): PreAct-1001 planned <= 12% of the unplanned
memory at >= 0.7x the speed, PreAct-164 <= 30%, PreAct-1001 batch 128 within 3 GB RSS.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mxcnn.common import runtime  # noqa: E402

runtime.configure()  # OMP_NUM_THREADS before mxnet loads

#: (depth, batch, planned) measured by default, in this order (plain next to planned).
DEFAULT_CONFIGS = [(164, 128, False), (164, 128, True),
                   (1001, 64, False), (1001, 64, True),
                   (1001, 128, True)]
#: What the plan should achieve (Chen et al. 2016's claim, sized for this machine).
TARGETS = {1001: {"alloc_pct": 12, "speed": 0.7, "rss_mb": {128: 3072}},
           164: {"alloc_pct": 30}}
#: Bottleneck (9n+2) depths drawn by --plot.
PLOT_DEPTHS = (56, 110, 164, 272, 551, 1001)
IMAGE = (3, 32, 32)


def network(depth):
    """Stage-tagged bottleneck PreAct ResNet for CIFAR-10 from the registry."""
    from mxcnn import symbols
    return symbols.get_symbol("preact_resnet", num_classes=10, num_layers=depth, bottleneck=True,
                              image_shape=IMAGE, memonger=True)


def build(depth, batch, planned):
    from mxcnn.graph import memonger
    sym = network(depth)
    return memonger.plan(sym, data=(batch,) + IMAGE) if planned else sym


# ---------------------------------------------------------------- one configuration (child)

def run_module(sym, batch, warmup, steps):
    import mxnet as mx
    import numpy as np
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch,) + IMAGE)], label_shapes=[("softmax_label", (batch,))])
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1, "momentum": 0.9,
                                                          "wd": 1e-4})
    rng = np.random.RandomState(0)
    data_batch = mx.io.DataBatch([mx.nd.array(rng.normal(0, 1, (batch,) + IMAGE))],
                                 [mx.nd.array(rng.randint(0, 10, batch))])

    def step():
        mod.forward_backward(data_batch)
        mod.update()

    return timed(step, warmup, steps, lambda: mod.get_outputs()[0].wait_to_read())


def run_gluon(sym, batch, warmup, steps):
    """The symbol as a hybridized SymbolBlock (CachedOp), trained with a Gluon Trainer."""
    import mxnet as mx
    import numpy as np
    data, label = mx.sym.var("data"), mx.sym.var("softmax_label")
    net = mx.gluon.SymbolBlock(sym, [data, label])
    xavier = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    for name, param in net.collect_params().items():  # what Module's initializer does by name
        if name.endswith(("gamma", "moving_var")):
            param.initialize(mx.init.One())
        elif name.endswith(("beta", "moving_mean", "bias")):
            param.initialize(mx.init.Zero())
        else:
            param.initialize(xavier)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd",
                               {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4})
    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.normal(0, 1, (batch,) + IMAGE))
    y = mx.nd.array(rng.randint(0, 10, batch))
    out = []

    def step():
        with mx.autograd.record():
            out[:] = [net(x, y)]
        out[0].backward()  # SoftmaxOutput's backward is the cross-entropy gradient
        trainer.step(batch)

    return timed(step, warmup, steps, lambda: mx.nd.waitall())


def timed(step, warmup, steps, sync):
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - start


def child(spec):
    import resource

    from mxcnn.graph import memonger
    depth, batch, planned = spec["depth"], spec["batch"], spec["planned"]
    sym = build(depth, batch, planned)
    module = spec["engine"] == "module"  # CachedOp has no memory report
    alloc = memonger.allocated_mb(sym, data=(batch,) + IMAGE) if module else None
    run = run_module if spec["engine"] == "module" else run_gluon
    seconds = run(sym, batch, spec["warmup"], spec["steps"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB on Linux
    print(json.dumps({"alloc_mb": alloc, "rss_mb": rss, "img_s": batch * spec["steps"] / seconds}))


def interleaved_speed(depth, batch, steps):
    """Speed only: plain and planned modules in one process, alternating single steps.

    On a busy machine this compares like with like better than separate processes
    (peak RSS here is that of both modules together, so it is not reported).
    """
    import mxnet as mx
    import numpy as np
    modules = {}
    for planned in (False, True):
        modules[planned] = mx.mod.Module(build(depth, batch, planned), context=mx.cpu())
        modules[planned].bind(data_shapes=[("data", (batch,) + IMAGE)],
                              label_shapes=[("softmax_label", (batch,))])
        modules[planned].init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in",
                                                    magnitude=2))
        modules[planned].init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1})
    rng = np.random.RandomState(0)
    data_batch = mx.io.DataBatch([mx.nd.array(rng.normal(0, 1, (batch,) + IMAGE))],
                                 [mx.nd.array(rng.randint(0, 10, batch))])
    seconds = {False: [], True: []}
    for i in range(steps + 1):  # the first step of each is warm-up
        for planned, mod in modules.items():
            start = time.perf_counter()
            mod.forward_backward(data_batch)
            mod.update()
            mx.nd.waitall()
            if i:
                seconds[planned].append(time.perf_counter() - start)
    for planned in (False, True):
        print("PreAct-%d batch %d %-5s step seconds: %s" % (
            depth, batch, "plan" if planned else "plain",
            " ".join("%.2f" % t for t in seconds[planned])))
    ratio = statistics.median(seconds[False]) / statistics.median(seconds[True])
    print("speed plan/plain (median step time): %.2fx" % ratio)


# ---------------------------------------------------------------- parent

def measure(depth, batch, planned, engine, warmup, steps):
    spec = dict(depth=depth, batch=batch, planned=planned, engine=engine, warmup=warmup,
                steps=steps)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]
        return {"error": tail}
    return json.loads(lines[-1])


def fmt(value, pattern):
    return "-" if value is None else pattern % value


def table(configs, engine, warmup, steps, repeats):
    """Measure ``configs`` ``repeats`` times, interleaved, and print one row per configuration.

    Speeds are medians over the rounds (these shared machines drift); memory is the largest.
    """
    for depth, batch, planned in configs:
        if planned:
            build(depth, batch, True)  # search here, the children read the plan cache
    runs = {config: [] for config in configs}
    for round_ in range(repeats):
        for config in configs:
            runs[config].append(measure(*config, engine, warmup, steps))
            print("  round %d/%d: PreAct-%d batch %d %s: %s" % (
                round_ + 1, repeats, config[0], config[1], "plan" if config[2] else "plain",
                runs[config][-1]), file=sys.stderr, flush=True)
    rows = {}
    print("%-12s %5s %5s | %9s %9s %8s" % ("network", "batch", "plan", "alloc MB", "peak RSS",
                                           "img/s"))
    for (depth, batch, planned), results in runs.items():
        name, plan = "PreAct-%d" % depth, "yes" if planned else "no"
        good = [r for r in results if "error" not in r]
        if not good:
            print("%-12s %5d %5s | failed: %s" % (name, batch, plan, results[-1]["error"]))
            continue
        r = rows[depth, batch, planned] = {
            "alloc_mb": good[0]["alloc_mb"], "rss_mb": max(g["rss_mb"] for g in good),
            "img_s": statistics.median(g["img_s"] for g in good)}
        print("%-12s %5d %5s | %9s %9.0f %8.2f" % (name, batch, plan, fmt(r["alloc_mb"], "%.0f"),
                                                   r["rss_mb"], r["img_s"]))
    print("\nplanned / unplanned, same depth and batch (target in brackets):")
    for (depth, batch, planned), r in rows.items():
        plain = rows.get((depth, batch, False))
        if not planned or not plain:
            continue
        alloc = 100.0 * r["alloc_mb"] / plain["alloc_mb"] if r["alloc_mb"] and plain["alloc_mb"] \
            else None
        target = TARGETS.get(depth, {})
        speed_target = " [>= %sx]" % target["speed"] if "speed" in target else ""
        print("  PreAct-%d batch %d: alloc %s [<= %s%%], peak RSS %.1f%%, speed %.2fx%s"
              % (depth, batch, fmt(alloc, "%.1f%%"), target.get("alloc_pct", "-"),
                 100.0 * r["rss_mb"] / plain["rss_mb"], r["img_s"] / plain["img_s"],
                 speed_target))
    for (depth, batch, planned), r in rows.items():
        limit = TARGETS.get(depth, {}).get("rss_mb", {}).get(batch)
        if planned and limit:
            print("  PreAct-%d batch %d planned: peak RSS %.0f MB [<= %d MB]"
                  % (depth, batch, r["rss_mb"], limit))


def plot(path, batch):
    """Executor memory against depth, with and without the plan, to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mxcnn.graph import memonger
    plain, planned = [], []
    print("%6s %10s %10s %7s" % ("depth", "plain MB", "plan MB", "ratio"))
    for depth in PLOT_DEPTHS:
        sym = network(depth)
        shape = (batch,) + IMAGE
        plain.append(memonger.allocated_mb(sym, data=shape))
        planned.append(memonger.allocated_mb(memonger.plan(sym, data=shape), data=shape))
        print("%6d %10.0f %10.0f %6.1f%%" % (depth, plain[-1], planned[-1],
                                             100.0 * planned[-1] / plain[-1]), flush=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(PLOT_DEPTHS, [mb / 1024 for mb in plain], "o-", label="no plan")
    ax.plot(PLOT_DEPTHS, [mb / 1024 for mb in planned], "s-", label="memonger plan")
    for series, offset in ((plain, (-4, 6)), (planned, (0, 7))):
        for depth, mb in zip(PLOT_DEPTHS, series):
            if depth >= 164:  # the small depths crowd each other
                ax.annotate("%.2f" % (mb / 1024), (depth, mb / 1024), textcoords="offset points",
                            xytext=offset, ha="right" if offset[0] else "center", fontsize=8)
    ax.set_xlabel("depth (bottleneck PreAct ResNet, 9n+2)")
    ax.set_ylabel("executor memory for training (GB)")
    ax.set_title("PreAct ResNet on CIFAR, batch %d, MXNet %s (CPU)"
                 % (batch, __import__("mxnet").__version__))
    ax.set_xticks(PLOT_DEPTHS)
    ax.set_ylim(0, max(plain) / 1024 * 1.12)  # room for the labels
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from mxcnn.common import atomic_write
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    print("wrote", path)


def parse_config(text):
    """``DEPTHxBATCH`` (both plain and planned) or ``DEPTHxBATCH:plan`` / ``:plain``."""
    try:
        size, _, which = text.partition(":")
        depth, batch = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected DEPTHxBATCH[:plan|:plain], e.g. 1001x64:plan")
    if which not in ("", "plan", "plain"):
        raise argparse.ArgumentTypeError("the suffix must be :plan or :plain, got %r" % which)
    return [(depth, batch, p) for p in (False, True) if not which or p == (which == "plan")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=parse_config, action="append",
                        help="DEPTHxBATCH[:plan|:plain] to measure instead of the default set "
                             "(repeatable)")
    parser.add_argument("--engine", choices=("module", "gluon"), default="module")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (default 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved rounds; img/s is their median (default 1)")
    parser.add_argument("--interleave", metavar="DEPTHxBATCH", type=parse_config,
                        help="speed only: alternate plain and planned steps in one process")
    parser.add_argument("--plot", metavar="PNG", help="draw memory against depth instead")
    parser.add_argument("--plot-batch", type=int, default=64)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.plot:
        return plot(args.plot, args.plot_batch)
    if args.interleave:
        depth, batch, _ = args.interleave[0]
        return interleaved_speed(depth, batch, args.steps)
    configs = [c for group in args.only for c in group] if args.only else DEFAULT_CONFIGS
    print("OMP_NUM_THREADS=%s, %d warmup + %d timed steps per configuration, %d round(s), "
          "engine %s\n" % (os.environ.get("OMP_NUM_THREADS"), args.warmup, args.steps,
                           args.repeats, args.engine))
    table(configs, args.engine, args.warmup, args.steps, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
