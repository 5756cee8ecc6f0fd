"""Cost of the trainer's NaN guard (``engines.nonfinite_params`` after every step).

    OMP_NUM_THREADS=2 python bench/nan_guard.py [--depth 20] [--batch-size 128] [--repeats 5]

The training loop copies each step's probabilities to the host for its metrics; the
guard then sums the squares of every parameter and running statistic in one fused
``multi_sum_sq`` and copies those sums to the host, waiting for the step's update.  Each
repeat times blocks of steps as the loop runs them, without and with the guard,
interleaved (order alternating), and the guard alone on settled parameters (its own
kernels).  Synthetic data, one fixed batch, one CPU context.
"""
import os
import sys

from mxcnn.common import runtime  # noqa: E402

runtime.configure()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from _common import _cpuinfo  # noqa: E402

from mxcnn import symbols  # noqa: E402
from mxcnn.graph import training  # noqa: E402
from mxcnn.train import engines  # noqa: E402


def _engine(kind, sym, batch_size):
    data_shape = (batch_size, 3, 32, 32)
    mx.random.seed(0)
    arg, aux = engines.initial_params(sym, data_shape)
    graph = training.training_graph(sym, [mx.cpu()], data_shape)
    return engines.make_engine(kind, graph, [mx.cpu()], data_shape, (batch_size,), arg, aux, "sgd",
                               {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4}, "local")


def _time_block(engine, data, label, steps, guard):
    """ms per step as the loop runs it (step + host copy of the output [+ the guard])."""
    mx.nd.waitall()
    tic = time.perf_counter()
    for _ in range(steps):
        engine.step(data, label)
        engine.output().asnumpy()
        if guard and engines.nonfinite_params(engine):
            raise RuntimeError("non-finite parameters in a benchmark run")
    mx.nd.waitall()
    return 1e3 * (time.perf_counter() - tic) / steps


def _time_guard(engine, calls=20):
    """ms per guard call on settled parameters (its own kernels and host copy only)."""
    mx.nd.waitall()
    tic = time.perf_counter()
    for _ in range(calls):
        engines.nonfinite_params(engine)
    return 1e3 * (time.perf_counter() - tic) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    info = _cpuinfo()
    print("CPU: %s; flags: %s" % (info.get("model name", "?"), " ".join(
        f for f in info.get("flags", "").split() if f.startswith(("avx", "amx", "fma")))))
    print("OMP_NUM_THREADS=%s resnet-%d batch %d, %d steps x %d repeats"
          % (os.environ.get("OMP_NUM_THREADS"), args.depth, args.batch_size, args.steps, args.repeats))
    sym = symbols.get_symbol("resnet", num_classes=10, num_layers=args.depth)
    data = mx.nd.random.uniform(-1, 1, shape=(args.batch_size, 3, 32, 32))
    label = mx.nd.array(np.arange(args.batch_size) % 10)
    for kind in engines.ENGINES:
        engine = _engine(kind, sym, args.batch_size)
        _time_block(engine, data, label, 3, True)  # bind, first allocations
        plain, guarded, alone = [], [], []
        for repeat in range(args.repeats):  # interleaved, order alternating
            for guard in ((False, True) if repeat % 2 == 0 else (True, False)):
                (guarded if guard else plain).append(_time_block(engine, data, label, args.steps, guard))
            alone.append(_time_guard(engine))
        p, g, a = (statistics.median(v) for v in (plain, guarded, alone))
        print("%-6s step %7.2f ms  with guard %7.2f ms  ratio %.4f | guard alone %.3f ms = %.4f of a "
              "step  (ratios per repeat: %s)" % (kind, p, g, g / p, a, a / p, ",".join(
                  "%.3f" % (y / x) for x, y in zip(plain, guarded))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
