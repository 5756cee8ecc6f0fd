"""Where a training step's time goes, by oneDNN primitive, for the benchmarked networks.

    python bench/step_profile.py                         # ResNet-20, WRN-16-4, DenseNet-BC-100
    python bench/step_profile.py --nets resnet20 --steps 3 --no-fusion

Each network trains ``--steps`` steps (after 2 untimed ones) through ``train.fit.benchmark``
in a fresh subprocess with ``DNNL_VERBOSE=1``; oneDNN then prints one line per primitive
execution with its time in ms.  The table sums them per step by kind (convolution forward,
backward-data, backward-weights, batch norm, reorders, ...) and states each convolution
kind's achieved GFLOP/s, against the whole step's wall time.  With 80-90% of a step inside
oneDNN's convolutions, the step can be no faster than those kernels.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common  # noqa: E402
import throughput  # noqa: E402  (NETS, base_env)

from mxcnn.graph import kernel_audit  # noqa: E402  (the one DNNL_VERBOSE parser)

WARMUP = 2


def parse(lines, steps):
    """``({kind: ms per step}, {kind: FLOP per step}, summary)`` from DNNL_VERBOSE lines
    (``summary``: graph.kernel_audit.summarise, with the ``ref`` and reorder shares)."""
    executions = kernel_audit.parse(lines)
    # every step runs the same primitives: keep the timed steps' share, dropping the warm-up
    # steps (first executions include one-time costs)
    per_step = len(executions) // (steps + WARMUP)
    timed = executions[len(executions) - per_step * steps:]
    return kernel_audit.by_kind(timed, steps) + (kernel_audit.summarise(timed, steps),)


def profile(net, steps, fuse, batch_size, dtype="float32"):
    code = ("import sys, time, json; sys.path.insert(0, %r)\n"
            "from mxcnn.common import runtime; runtime.configure()\n"
            "import mxnet as mx\n"
            "from mxcnn.train import fit\n"
            "import throughput, _mxnet_steps\n"
            "sym = _mxnet_steps.symbol(throughput.NETS[%r])\n"
            "speed = fit.benchmark(sym, %d, num_batches=%d, warmup=%d, fuse=%r, dtype=%r)\n"
            "print('STEP-SECONDS', %d / speed)\n" % (ROOT, net, batch_size, steps, WARMUP, fuse,
                                                     dtype, batch_size))
    env = throughput.base_env(_common.usable_cores())
    env["DNNL_VERBOSE"] = "1"
    env["PYTHONPATH"] = HERE + os.pathsep + env["PYTHONPATH"]
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit("step_profile.py: %s failed: %s" % (net, (proc.stderr.strip().splitlines()
                                                                   or ["?"])[-1]))
    lines = proc.stdout.splitlines()
    step_s = next(float(l.split()[1]) for l in lines if l.startswith("STEP-SECONDS"))
    return (step_s,) + parse(lines, steps)


def report(net, step_s, times, flops, summary, out=sys.stdout):
    label = throughput.NETS[net][0]
    inside = sum(times.values())
    out.write("%s: step %.0f ms wall (timed with verbose output on), %.0f ms inside oneDNN\n"
              % (label, step_s * 1000, inside))
    for kind, ms in sorted(times.items(), key=lambda kv: -kv[1])[:10]:
        rate = ("  %6.1f GFLOP/s" % (flops[kind] / ms / 1e6)) if kind in flops and ms else ""
        out.write("  %-36s %8.1f ms  %5.1f%%%s\n" % (kind, ms, 100.0 * ms / inside, rate))
    conv = sum(ms for kind, ms in times.items() if kind.startswith("convolution"))
    out.write("  convolutions: %.1f%% of the oneDNN time, %.1f GFLOP/s on average; oneDNN ref "
              "kernels %.1f%%, reorders %.1f%%\n\n"
              % (100.0 * conv / inside, sum(flops.values()) / conv / 1e6 if conv else 0.0,
                 100.0 * summary["ref_share"], 100.0 * summary["reorder_share"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="resnet20,wrn16_4,densenet100",
                        help="comma-separated subset of %s" % ",".join(throughput.NETS))
    parser.add_argument("--steps", type=int, default=2, help="profiled steps after 2 warm-up ones")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-fusion", action="store_true", help="profile the unfused graph")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the trainer's --dtype graph (bfloat16 needs avx512_bf16)")
    args = parser.parse_args(argv)
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in nets if n not in throughput.NETS]
    if unknown or args.steps < 1:
        parser.error("unknown net %s; choose from %s" % (", ".join(unknown), ", ".join(throughput.NETS))
                     if unknown else "--steps must be positive")
    print("oneDNN time per training step (DNNL_VERBOSE), batch %d, OMP_NUM_THREADS=%s, %s, %s"
          % (args.batch_size, os.environ.get("OMP_NUM_THREADS", "cores"),
             "unfused" if args.no_fusion else "BatchNorm+ReLU fused", args.dtype))
    started = time.time()
    for net in nets:
        report(net, *profile(net, args.steps, not args.no_fusion, args.batch_size, args.dtype))
    print("%.1f min" % ((time.time() - started) / 60.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
