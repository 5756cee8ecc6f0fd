"""How fast the CIFAR input pipeline is, alone and under ResNet-20 training.

    OMP_NUM_THREADS=2 python bench/data_pipeline.py [--source cifar10-jpeg-subset.tar.gz]

Prints, from one run: the conversion time of the real CIFAR-10 JPEG subset (10k train +
5k val) to PNG RecordIO; the training iterator's images/s with augmentation (pad 4 +
random crop + mirror + mean/std) for the in-memory backend and for the stock
``ImageRecordIter``; ResNet-20's training images/s (``mx.mod.Module``, SGD, batch 128) on
synthetic data and from the real .rec through each backend; and the ratios the data
pipeline is judged by: pipeline / training consumption (target >= 20x) and real-.rec /
synthetic training speed (target >= 0.9x).  Training runs are interleaved and repeated
(medians), since speeds on shared machines drift during a day.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import mxnet as mx  # noqa: E402

from mxcnn import symbols  # noqa: E402
from mxcnn.data.iterators import SyntheticIter, get_rec_iters  # noqa: E402
from mxcnn.data.prepare_cifar import prepare  # noqa: E402

SUBSET = "cifar10-jpeg-subset.tar.gz"


def find_subset():
    for folder in (os.path.join(ROOT, "..", "shared", "data"),):
        path = os.path.join(folder, SUBSET)
        if os.path.isfile(path):
            return os.path.abspath(path)
    return None


def endless(it):
    """Batches of ``it`` forever, starting a new epoch (reset) when one ends."""
    while True:
        yield from it
        it.reset()


def iterator_speed(it, batches):
    """``(images/s, images per CPU-second)`` of ``it`` alone.  CPU time counts every thread of
    the process (ImageRecordIter decodes in its own), so it is what the pipeline takes away
    from training, and unlike wall time it barely depends on other load on the machine."""
    stream = endless(it)
    next(stream)
    mx.nd.waitall()
    tic, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        batch = next(stream)
        batch.data[0].wait_to_read()
    images = batches * it.batch_size
    return images / (time.perf_counter() - tic), images / (time.process_time() - cpu)


def make_module(batch_size, num_classes=10):
    sym = symbols.get_symbol("resnet", num_classes=num_classes, num_layers=20)
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch_size, 3, 32, 32))],
             label_shapes=[("softmax_label", (batch_size,))])
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.05,
                                                          "momentum": 0.9, "wd": 1e-4})
    return mod


def train_speed(mod, stream, batches, warmup=3):
    """``(images/s, images per CPU-second)`` of a Module.fit-style loop (forward_backward,
    update, metric) over ``stream``."""
    metric = mx.metric.Accuracy()
    for _ in range(warmup):
        batch = next(stream)
        mod.forward_backward(batch)
        mod.update()
        mod.update_metric(metric, batch.label)
    mx.nd.waitall()
    tic, cpu = time.perf_counter(), time.process_time()
    images = 0
    for _ in range(batches):
        batch = next(stream)
        mod.forward_backward(batch)
        mod.update()
        mod.update_metric(metric, batch.label)
        images += batch.data[0].shape[0] - batch.pad
    mx.nd.waitall()
    return images / (time.perf_counter() - tic), images / (time.process_time() - cpu)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=find_subset(),
                        help="class-per-folder CIFAR archive to convert (default: the shared "
                        "%s)" % SUBSET)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-batches", type=int, default=25,
                        help="timed training batches per run (default 25)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    return parser.parse_args(argv)


def _measure_iterators(iters, num_train, args):
    """Iterator-alone speed per backend: ``(median wall img/s, median img per CPU-second)``."""
    pipeline = {b: [] for b in iters}
    per_cpu = {b: [] for b in iters}
    epoch_batches = -(-num_train // args.batch_size)
    for _ in range(args.repeats):
        for backend, it in iters.items():
            wall, cpu = iterator_speed(it, epoch_batches)
            pipeline[backend].append(wall)
            per_cpu[backend].append(cpu)
    pipe = {b: statistics.median(v) for b, v in pipeline.items()}
    for backend, values in pipeline.items():
        print("iterator alone, augmented, %-6s: %8.0f img/s, %8.0f img per CPU-second  "
              "(runs: %s)" % (backend, pipe[backend], statistics.median(per_cpu[backend]),
                              ", ".join("%.0f" % v for v in values)), flush=True)
    return pipe, {b: statistics.median(v) for b, v in per_cpu.items()}


def _measure_training(iters, args):
    """ResNet-20 training speed from synthetic and real data, interleaved rounds."""
    mod = make_module(args.batch_size)
    streams = {"synthetic": endless(SyntheticIter(args.batch_size, (3, 32, 32), 10, 50)),
               "rec/memory": endless(iters["memory"]),
               "rec/native": endless(iters["native"])}
    speeds = {name: [] for name in streams}
    train_cpu = {name: [] for name in streams}
    for round_ in range(args.repeats):
        for name, stream in streams.items():
            wall, cpu = train_speed(mod, stream, args.train_batches)
            speeds[name].append(wall)
            train_cpu[name].append(cpu)
        print("  round %d: %s" % (round_ + 1, ", ".join(
            "%s %.0f" % (name, v[-1]) for name, v in speeds.items())), flush=True)
    train = {name: statistics.median(v) for name, v in speeds.items()}
    for name, values in speeds.items():
        print("ResNet-20 training, %-10s: %6.0f img/s, %6.0f img per CPU-second  (runs: %s)"
              % (name, train[name], statistics.median(train_cpu[name]),
                 ", ".join("%.0f" % v for v in values)))
    return train, {name: statistics.median(v) for name, v in train_cpu.items()}


def _print_ratios(pipe, cpu, train, train_cpu):
    print()
    print("%-58s %8s %8s" % ("ratio", "memory", "native"))
    print("%-58s %7.1fx %7.1fx" % ("pipeline alone / ResNet-20 consumption (target >= 20x)",
                                   pipe["memory"] / train["synthetic"],
                                   pipe["native"] / train["synthetic"]))
    train_per_cpu = train_cpu["synthetic"]
    print("%-58s %7.1f%% %7.1f%%" % ("input CPU time / ResNet-20 training CPU time per image",
                                     100 * train_per_cpu / cpu["memory"],
                                     100 * train_per_cpu / cpu["native"]))
    print("%-58s %7.2fx %7.2fx" % ("training from real .rec / synthetic (target >= 0.9x)",
                                   train["rec/memory"] / train["synthetic"],
                                   train["rec/native"] / train["synthetic"]))
    print("%-58s %7.2fx %7.2fx" % ("  same, images per CPU-second (less load-sensitive)",
                                   train_cpu["rec/memory"] / train_per_cpu,
                                   train_cpu["rec/native"] / train_per_cpu))


def main(argv=None):
    args = _parse(argv)
    if not args.source:
        print("data_pipeline: error: %s not found beside the repository (../shared/data) or in "
              "../shared/data; pass --source" % SUBSET, file=sys.stderr)
        return 2
    print("OMP_NUM_THREADS=%s, batch %d, mxnet %s, load average %.1f"
          % (os.environ.get("OMP_NUM_THREADS"), args.batch_size, mx.__version__,
             os.getloadavg()[0]), flush=True)
    with tempfile.TemporaryDirectory(prefix="mxcnn-bench-") as tmp:
        tic = time.perf_counter()
        stats = prepare(source=args.source, output_dir=tmp, quiet=True, log=lambda *a: None)
        convert_s = time.perf_counter() - tic
        print("conversion of %s: %d + %d images to PNG RecordIO in %.1f s (%.0f img/s)"
              % (os.path.basename(args.source), stats["num_train"], stats["num_val"], convert_s,
                 (stats["num_train"] + stats["num_val"]) / convert_s))
        train_rec = os.path.join(tmp, "cifar10_train.rec")
        iters = {}
        for backend in ("memory", "native"):
            tic = time.perf_counter()
            iters[backend] = get_rec_iters(train_rec, None, args.batch_size, backend=backend)[0]
            print("%-6s backend ready in %.2f s%s" % (
                backend, time.perf_counter() - tic,
                " (decodes all %d train images once)" % stats["num_train"]
                if backend == "memory" else ""))
        pipe, cpu = _measure_iterators(iters, stats["num_train"], args)
        train, train_cpu = _measure_training(iters, args)
        _print_ratios(pipe, cpu, train, train_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
