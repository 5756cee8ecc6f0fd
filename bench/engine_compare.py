"""Module vs hybridized Gluon training speed on ResNet-20/56 (synthetic data, interleaved).

    OMP_NUM_THREADS=2 python bench/engine_compare.py [--depths 20,56] [--repeats 3]

Each repeat times both engines back to back (``train.fit.benchmark``: bare
forward/backward/update steps on one fixed batch), so machine drift hits both alike; the
table shows per-engine medians and the gluon/module ratio.  ``train.fit.DEFAULT_ENGINE``
is the faster one (the figures are quoted in its docstring/report).
"""
import os
import sys

from mxcnn.common import runtime  # noqa: E402

runtime.configure()

import argparse  # noqa: E402
import statistics  # noqa: E402

from mxcnn import symbols  # noqa: E402
from mxcnn.train import fit  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-batches", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("OMP_NUM_THREADS=%s batch=%d batches=%d repeats=%d"
          % (os.environ.get("OMP_NUM_THREADS"), args.batch_size, args.num_batches, args.repeats))
    for depth in [int(d) for d in args.depths.split(",")]:
        sym = symbols.get_symbol("resnet", num_classes=10, num_layers=depth)
        speeds = {engine: [] for engine in fit.ENGINES}
        for repeat in range(args.repeats):
            order = fit.ENGINES if repeat % 2 == 0 else tuple(reversed(fit.ENGINES))
            for engine in order:
                speeds[engine].append(fit.benchmark(sym, args.batch_size, num_batches=args.num_batches,
                                                    engine=engine))
        med = {e: statistics.median(v) for e, v in speeds.items()}
        print("resnet-%-4d module %7.1f img/s  gluon %7.1f img/s  gluon/module %.3f   (runs: %s)"
              % (depth, med["module"], med["gluon"], med["gluon"] / med["module"],
                 "; ".join("%s %s" % (e, ",".join("%.0f" % x for x in v)) for e, v in speeds.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
