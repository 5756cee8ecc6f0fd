"""Kernel-path audit: which oneDNN implementations one training step of every network runs.

    python bench/kernel_audit.py                              # every network, ~15 min on 2 cores
    python bench/kernel_audit.py --nets resnet,se_resnet --layouts cifar --dtypes float32
    python bench/kernel_audit.py --graphs fused,built --fail-above 5

For each registered network (``symbols.list_networks``, default depth) in its CIFAR layout
(3x32x32) and its ImageNet layout (3x224x224), each graph and each dtype runs one warm-up
step and ``--steps`` audited training steps (``graph.kernel_audit.measure``: Module, SGD,
synthetic data, ``DNNL_VERBOSE=1``; with several steps each primitive's least disturbed one
counts), all variants of one network in one subprocess.  Graphs:

* ``fused``   -- what the trainer binds (``graph.training.training_graph``): BatchNorm+ReLU fused
  and the global-pool rewrite, on oneDNN CPUs;
* ``unfused`` -- what ``train_cifar.py --no-fusion`` binds (``training_graph(fuse=False)``);
* ``built``   -- the symbol exactly as ``symbols.get_symbol`` emits it (what plain MXNet
  trains from ``-symbol.json``); not run unless asked for.

dtypes: ``float32``, and ``bfloat16`` where the CPU has ``avx512_bf16`` (the trainer's
``--dtype bfloat16`` graph).  Per network the table gives the oneDNN time of the
step, the share of it in ``ref`` implementations (oneDNN's slow portable loops) and in
reorders, then the heaviest primitives and every ``ref`` one with their memory layouts.
Batches are small to keep the whole audit short (CIFAR 16, ImageNet 2 by default); the
shares, not the times, are the point: a ``ref`` kernel is slow at any batch.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common  # noqa: E402,F401

from mxcnn.common import UserError, atomic_write_text, cli_error, usable_cores  # noqa: E402
from mxcnn.graph import training  # noqa: E402

PROG = "kernel_audit.py"
LAYOUTS = {"cifar": (3, 32, 32), "imagenet": (3, 224, 224)}
#: Networks that exist in one layout only although they would build at the other size.
ONLY_LAYOUT = {"lenet": "cifar", "airbench": "cifar"}
GRAPHS = ("fused", "unfused", "built")
DTYPES = ("float32", "bfloat16")
WORST = 3


def _list(text, allowed, what):
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise UserError("unknown %s %s; choose from %s" % (what, ", ".join(unknown) or "(none)",
                                                           ", ".join(allowed)))
    return items


def has_bf16():
    from mxcnn.graph import kernel_audit
    return "avx512_bf16" in kernel_audit.isa_flags()


def variants(network, layout, graphs, dtypes, batch):
    """``((label, symbol, data_shape) jobs, failures)`` of one network in one layout, or a
    reason string when the network has no such layout.

    ``fused``/``unfused``: ``graph.training.training_graph`` with that ``fuse`` and ``dtype`` (the
    trainer's own conversion); ``built``: the symbol as emitted, converted by
    ``graph.precision.training_symbol`` alone.
    """
    import mxnet as mx

    from mxcnn import symbols
    from mxcnn.graph import precision
    if ONLY_LAYOUT.get(network, layout) != layout:
        return "no %s layout" % layout
    shape = LAYOUTS[layout]
    data_shape = (batch,) + shape
    try:
        sym = symbols.get_symbol(network, num_classes=10 if layout == "cifar" else 1000,
                                 image_shape=shape)
    except UserError as err:  # e.g. a network with no such layout
        return str(err).split(";")[0]
    jobs, failed = [], []
    for graph in graphs:
        for dtype in dtypes:
            label = "%s %s" % (graph, dtype)
            try:
                if graph == "built":
                    bound = precision.training_symbol(sym, dtype)
                else:
                    bound = training.training_graph(sym, [mx.cpu()], data_shape,
                                                    fuse=graph == "fused", dtype=dtype)
            except mx.base.MXNetError as err:  # e.g. a conversion MXNet refuses: report, go on
                failed.append("%s: %s" % (label, str(err).strip().splitlines()[0]))
                continue
            jobs.append((label, bound, data_shape))
    return jobs, failed


def audit_network(network, layout, graphs, dtypes, batch, env, steps=1):
    """``(labels, summaries, failures)``, or ``(reason, None, failures)``, for one network
    and layout (``failures``: variants that could not be built, with MXNet's message)."""
    from mxcnn.graph import kernel_audit
    built = variants(network, layout, graphs, dtypes, batch)
    if isinstance(built, str):
        return built, None, []
    jobs, failed = built
    if not jobs:
        return "every variant failed", None, failed
    try:
        return [job[0] for job in jobs], kernel_audit.measure(jobs, steps=steps, env=env), failed
    except kernel_audit.AuditError as err:
        return "failed: %s" % err, None, failed


def format_network(title, labels, summaries):
    from mxcnn.graph import kernel_audit
    lines = [title]
    lines.append("  %-18s %10s %6s %8s  %s" % ("graph dtype", "oneDNN ms", "ref", "reorder",
                                               "executions"))
    for label, summary in zip(labels, summaries):
        lines.append("  %-18s %10.1f %5.1f%% %7.1f%%  %d"
                     % (label, summary["total_ms"], 100 * summary["ref_share"],
                        100 * summary["reorder_share"], summary["executions"]))
    for label, summary in zip(labels, summaries):
        lines.append("  %s: heaviest and ref primitives (ms per step, share, calls, kind, "
                     "implementation, layouts, one problem)" % label)
        lines.extend(kernel_audit.format_summary(label, summary, worst=WORST)[1:])
    return lines


def build_parser():
    from mxcnn import symbols
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(symbols.list_networks()),
                        help="comma-separated networks (default: every registered one)")
    parser.add_argument("--layouts", default="cifar,imagenet", help="cifar, imagenet or both")
    parser.add_argument("--graphs", default="fused,unfused", help="fused, unfused, built")
    parser.add_argument("--dtypes", default=None,
                        help="float32, bfloat16 (default: both where the CPU has avx512_bf16)")
    parser.add_argument("--steps", type=int, default=1,
                        help="audited steps after the warm-up; with more, each primitive's "
                             "least disturbed step counts (a busy machine only adds time)")
    parser.add_argument("--cifar-batch", type=int, default=16)
    parser.add_argument("--imagenet-batch", type=int, default=2)
    parser.add_argument("--fail-above", type=float, default=None, metavar="PCT",
                        help="exit 1 when any audited step spends more than PCT%% in ref kernels")
    parser.add_argument("--json", default=None, help="also write every summary to this file")
    return parser


def _options(args):
    """``(nets, layouts, graphs, dtypes)`` from the parsed flags; UserError if one is bad."""
    from mxcnn import symbols
    from mxcnn.graph import kernel_audit
    nets = _list(args.nets, list(symbols.list_networks()), "network")
    layouts = _list(args.layouts, list(LAYOUTS), "layout")
    graphs = _list(args.graphs, GRAPHS, "graph")
    default_dtypes = "float32,bfloat16" if has_bf16() else "float32"
    dtypes = _list(args.dtypes or default_dtypes, DTYPES, "dtype")
    if "bfloat16" in dtypes and not has_bf16():
        raise UserError("bfloat16 needs a CPU with avx512_bf16; this one has %s"
                        % " ".join(kernel_audit.isa_flags()))
    if min(args.cifar_batch, args.imagenet_batch, args.steps) < 1:
        raise UserError("--steps and the batch sizes must be positive")
    return nets, layouts, graphs, dtypes


def audit_all(nets, layouts, graphs, dtypes, args, env):
    """Audit and print every network; ``(results, [(ref share, name)], broken variants)``."""
    results, shares, broken = [], [], []
    for network in nets:
        for layout in layouts:
            batch = args.cifar_batch if layout == "cifar" else args.imagenet_batch
            title = "%s, %s layout %s, batch %d" % (network, layout,
                                                    "x".join(map(str, LAYOUTS[layout])), batch)
            labels, summaries, failed = audit_network(network, layout, graphs, dtypes, batch,
                                                      env, args.steps)
            broken.extend("%s %s %s" % (network, layout, why) for why in failed)
            notes = "".join("  not built: %s\n" % why for why in failed)
            if summaries is None:
                print("%s: skipped (%s)\n%s" % (title, labels, notes), flush=True)
                continue
            print("\n".join(format_network(title, labels, summaries)) + "\n" + notes, flush=True)
            for label, summary in zip(labels, summaries):
                results.append({"network": network, "layout": layout, "batch": batch,
                                "variant": label, "summary": summary})
                shares.append((summary["ref_share"], "%s %s %s" % (network, layout, label)))
    return results, sorted(shares, reverse=True), broken


def main(argv=None):
    from mxcnn.graph import kernel_audit
    args = build_parser().parse_args(argv)
    try:
        nets, layouts, graphs, dtypes = _options(args)
    except UserError as err:
        return cli_error(PROG, str(err))
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(usable_cores()))}
    print("oneDNN kernel audit, %d training step(s) after one warm-up; %s; ISA flags: %s; "
          "OMP_NUM_THREADS=%s; batch: cifar %d, imagenet %d"
          % (args.steps, kernel_audit.cpu_name(), " ".join(kernel_audit.isa_flags()),
             env["OMP_NUM_THREADS"], args.cifar_batch, args.imagenet_batch))
    started = time.time()
    results, shares, broken = audit_all(nets, layouts, graphs, dtypes, args, env)
    if shares:
        print("highest ref share: %s" % ", ".join("%s %.1f%%" % (name, 100 * share)
                                                  for share, name in shares[:5]))
    if broken:
        print("%d variant(s) could not be built: %s" % (len(broken), "; ".join(broken)))
    print("%.1f min" % ((time.time() - started) / 60.0))
    if args.json:
        atomic_write_text(args.json, json.dumps({"cpu": kernel_audit.cpu_name(),
                                                 "isa_flags": kernel_audit.isa_flags(),
                                                 "results": results}, indent=1))
    if args.fail_above is not None and shares and 100 * shares[0][0] > args.fail_above:
        print("FAIL: %s spends %.1f%% of its oneDNN time in ref kernels (> %g%%)"
              % (shares[0][1], 100 * shares[0][0], args.fail_above))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
