"""CPU inference: ours (float32 unfused/fused, bfloat16, int8) against ONNX Runtime and PyTorch.

    python bench/inference.py                       # every net, 3 interleaved rounds
    python bench/inference.py --nets resnet20,resnet56 --rounds 3
    python bench/inference.py --quick               # ResNet-20 only, 1 round, 1,000 test images
    python bench/inference.py --nets resnet20 --profile fused,ort_fp32,int8,ort_int8   # + kernel time

Nets: ResNet-20, ResNet-56, WRN-16-4, DenseNet-BC-100, MobileNetV2 (CIFAR layouts, trained
here on the shared 10,000-image CIFAR-10 JPEG subset for 20, 10, 8, 3 and 5 epochs, about an
hour on 2 cores; checkpoints cached in runs/bench-inference/)
and ResNet-50 at 224 (random weights with BatchNorm statistics from images, the
tests/inference/int8_helpers.py conditioning; accuracy is its top-1 agreement with float32).

Variants, each in its own worker process so that all run interleaved in every round:
``fp32`` (oneDNN, no subgraph fusion), ``fused`` (the default bind of inference/predict.py),
``bf16`` (``--dtype bfloat16``), ``int8`` (inference/quantize.py, naive calibration on the
first 320 training images), ``ort_fp32`` / ``ort_int8`` (ONNX Runtime on inference/
export_onnx.py's file; ``quantize_static`` QDQ, uint8 activations / int8 weights, MinMax
calibration on the same 320 images), ``torch`` (PyTorch float32, channels_last,
``inference_mode``; bench/torch_models.py or torchvision twins, random weights: speed only).
Latency at batch 1 (median and p99 of single forwards), throughput at batch 64 (16 for
ResNet-50).  Threads: ``--threads`` (default 2, one per core) for every framework (OpenMP,
ONNX Runtime's intra-op pool, torch.set_num_threads); ``fused@N`` and ``int8@N`` repeat ours
with the other of 1 and 2 threads.  On a shared machine use ``--threads 1``: with other jobs
on the cores, two OpenMP threads that wait actively stall for up to hundreds of ms per forward.
Top-1 is on the 5,000 test images (``--quick``: 1,000).  ``--profile`` adds, per variant at
batch 1 and the throughput batch, the kernel time per forward (ours: oneDNN's DNNL_VERBOSE;
ONNX Runtime: its node profiler) beside the measured time; the rest is the framework's own.
"""

import argparse
import os
import statistics
import subprocess
import sys

import numpy as np
from _inference_workers import WARMUP, Worker, worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNS = os.path.join(ROOT, "runs", "bench-inference")
SUBSET = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg-subset.tar.gz")
CALIB_IMAGES = 320

#: name -> (family, options, image shape, training flags, epochs, PyTorch twin)
NETS = {
    "resnet20": (
        "resnet",
        {"num_layers": 20},
        (3, 32, 32),
        ["--network", "resnet", "--num-layers", "20"],
        20,
        "resnet20",
    ),
    "resnet56": (
        "resnet",
        {"num_layers": 56},
        (3, 32, 32),
        ["--network", "resnet", "--num-layers", "56"],
        10,
        "resnet56",
    ),
    "wrn16_4": (
        "wrn",
        {"num_layers": 16, "widen_factor": 4},
        (3, 32, 32),
        ["--network", "wrn", "--num-layers", "16", "--widen-factor", "4"],
        8,
        "wrn16_4",
    ),
    "densenet100": (
        "densenet",
        {"num_layers": 100, "growth_rate": 12},
        (3, 32, 32),
        ["--network", "densenet", "--num-layers", "100", "--growth-rate", "12"],
        3,
        "densenet100",
    ),
    "mobilenet_v2": (
        "mobilenet_v2",
        {},
        (3, 32, 32),
        ["--network", "mobilenet_v2"],
        5,
        "tv_mobilenet_v2_cifar",
    ),
    "resnet50": ("resnet", {"num_layers": 50}, (3, 224, 224), None, 0, "tv_resnet50"),
}
MX_VARIANTS = ("fp32", "fused", "bf16", "int8")
VARIANTS = MX_VARIANTS + ("ort_fp32", "ort_int8", "torch")


def throughput_batch(net):
    return 16 if NETS[net][2][1] > 64 else 64


# ------------------------------------------------------------------ preparing models (parent)


def _run(argv, log):
    with open(log, "w") as handle:
        code = subprocess.call(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        raise SystemExit("bench/inference.py: %s failed (exit %d); see %s" % (argv[1], code, log))


def prepare_data():
    """runs/bench-inference/data/cifar10_{train,val}.rec from the shared subset."""
    folder = os.path.join(RUNS, "data")
    if not os.path.exists(os.path.join(folder, "cifar10_val.rec")):
        os.makedirs(RUNS, exist_ok=True)
        _run(
            [
                sys.executable,
                "data/prepare_cifar.py",
                "--source",
                SUBSET,
                "--output-dir",
                folder,
                "--name",
                "cifar10",
                "--quiet",
            ],
            os.path.join(RUNS, "prepare.log"),
        )
    return os.path.join(folder, "cifar10_train.rec"), os.path.join(folder, "cifar10_val.rec")


def trained_checkpoint(net, data):
    """``(prefix, epoch)`` of the net's cached checkpoint, training it first if there is none."""
    from mxcnn.inference import checkpoint

    prefix = os.path.join(RUNS, net, "m")
    epoch = checkpoint.latest_epoch(prefix)
    if epoch is None:
        flags, epochs = NETS[net][3], NETS[net][4]
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        _run(
            [
                sys.executable,
                "train/train_cifar.py",
                "--data-dir",
                os.path.dirname(data[0]),
                "--num-epochs",
                str(epochs),
                "--batch-size",
                "128",
                "--lr",
                "0.1",
                "--lr-scheduler",
                "cosine",
                "--wd",
                "5e-4",
                "--model-prefix",
                prefix,
            ]
            + flags,
            os.path.join(RUNS, net + ".log"),
        )
        epoch = checkpoint.latest_epoch(prefix)
    return prefix, epoch


def _images(rec, shape, count, stats):
    """The first ``count`` images of ``rec`` (N, 3, 32, 32) normalised, and their labels."""
    from mxcnn.data import iterators

    normalisation = {key: stats[key] for key in ("mean", "std")}  # counts describe other files
    _, val = iterators.get_rec_iters(None, rec, 100, shape, stats=normalisation)
    data, labels = [], []
    for batch in val:
        data.append(batch.data[0].asnumpy())
        labels.append(batch.label[0].asnumpy())
        if sum(len(d) for d in data) >= count:
            break
    return np.concatenate(data)[:count], np.concatenate(labels)[:count].astype(np.int64)


def _upsampled(images, side):
    factor = -(-side // images.shape[2])
    return np.repeat(np.repeat(images, factor, axis=2), factor, axis=3)[:, :, :side, :side].copy()


def resnet50_checkpoint(data, stats):
    """A ResNet-50 checkpoint at 224 with random weights and data-set BatchNorm statistics."""
    import mxnet as mx

    from mxcnn import symbols
    from mxcnn.inference import checkpoint
    from mxcnn.inference.predict import preprocess_record

    sys.path.insert(0, ROOT)
    from tests.inference import int8_helpers

    prefix = os.path.join(RUNS, "resnet50", "m")
    if checkpoint.latest_epoch(prefix) is None:
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        sym = symbols.get_symbol("resnet", num_classes=10, num_layers=50, image_shape=(3, 224, 224))
        args, auxs = int8_helpers.random_params(sym, (3, 224, 224))
        batch = _upsampled(_images(data[0], (3, 32, 32), 16, stats)[0], 224)
        auxs = int8_helpers.set_bn_statistics(sym, args, auxs, mx.nd.array(batch))
        state = {"preprocess": preprocess_record((3, 224, 224), stats, 10)}
        checkpoint.save_checkpoint(prefix, 0, sym, args, auxs, state=state)
    return prefix, 0


#: The code an int8 checkpoint depends on: a cached one older than any of them is redone.
QUANTIZE_SOURCES = (os.path.join(ROOT, "inference", "quantize.py"),
                    os.path.join(ROOT, "graph", "onednn_inference.py"))


def _stale(out, epoch, prefix):
    """Whether ``out``'s epoch is missing or older than the checkpoint or the quantize code."""
    from mxcnn.inference import checkpoint

    if checkpoint.latest_epoch(out) != epoch:
        return True
    written = os.path.getmtime(checkpoint.checkpoint_paths(out, epoch)["params"])
    inputs = QUANTIZE_SOURCES + (checkpoint.checkpoint_paths(prefix, epoch)["params"],)
    return any(os.path.getmtime(path) > written for path in inputs)


def quantized(net, prefix, epoch, calib):
    """``PREFIX-int8`` of the checkpoint, calibrated on ``calib`` (written once, redone when
    the checkpoint or the quantization code is newer)."""
    from mxcnn.inference import checkpoint, quantize

    out = quantize.int8_prefix(prefix)
    if _stale(out, epoch, prefix):
        from mxcnn.inference.predict import inference_symbol, read_checkpoint

        sym, args, auxs = read_checkpoint(prefix, epoch)
        qsym, qargs, qauxs, info = quantize.quantize_symbol(inference_symbol(sym), args, auxs, calib)
        state = {
            "preprocess": checkpoint.load_state(prefix, epoch).get("preprocess"),
            "quantization": {"calib_images": len(calib), "float32_layers": info["excluded"]},
        }
        checkpoint.save_checkpoint(out, epoch, qsym, qargs, qauxs, state=state)
    return out


def onnx_files(net, prefix, epoch, calib):
    """``(float32 .onnx, int8 .onnx)``: inference/export_onnx.py's file and its ORT static
    quantization (QDQ, uint8 activations, int8 weights, MinMax on ``calib``)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mxcnn.inference.export_onnx import export_checkpoint

    fp32 = prefix + ".onnx"
    int8 = prefix + "-ort-int8.onnx"
    if not os.path.exists(fp32):
        export_checkpoint(prefix, epoch, fp32, NETS[net][2], batch_size=1, dynamic_batch=True)
    if not os.path.exists(int8):

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{"data": calib[i: i + 32]} for i in range(0, len(calib), 32)])

            def get_next(self):
                return next(self.batches, None)

        pre = prefix + "-pre.onnx"
        quant_pre_process(fp32, pre)
        quantize_static(
            pre,
            int8,
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return fp32, int8


def prepare(net, data, stats, test_count):
    """Everything the workers load for ``net``: a spec dict (paths, arrays on disk)."""
    shape = NETS[net][2]
    calib, _ = _images(data[0], (3, 32, 32), CALIB_IMAGES, stats)
    test, labels = _images(data[1], (3, 32, 32), 5000, stats)
    step = max(1, len(test) // test_count)  # the records are ordered by class: sample them all
    test, labels = test[::step][:test_count], labels[::step][:test_count]
    if net == "resnet50":
        prefix, epoch = resnet50_checkpoint(data, stats)
        calib, test, labels = _upsampled(calib[:64], 224), _upsampled(test[:256], 224), None
    else:
        prefix, epoch = trained_checkpoint(net, data)
    arrays = os.path.join(RUNS, net, "test-%d.npy" % len(test))
    np.save(arrays, test.astype(np.float32))
    ort_fp32, ort_int8 = onnx_files(net, prefix, epoch, calib.astype(np.float32))
    return {
        "net": net,
        "prefix": prefix,
        "epoch": epoch,
        "int8": quantized(net, prefix, epoch, calib),
        "shape": shape,
        "test": arrays,
        "labels": None if labels is None else labels.tolist(),
        "ort_fp32": ort_fp32,
        "ort_int8": ort_int8,
        "torch": NETS[net][5],
    }


# ------------------------------------------------------------------ the run (parent)


def _plan(workers, quick, other_threads):
    """``[(label, worker, variant, batch-1 only)]`` in the order every round runs them: every
    variant at ``--threads``, and ours fused/int8 again at ``other_threads`` (batch 1 and 64)."""
    plan = [(v, workers["mx"], v, False) for v in MX_VARIANTS]
    plan += [(v, workers["ort"], v, False) for v in ("ort_fp32", "ort_int8")]
    if workers.get("torch"):
        plan.append(("torch", workers["torch"], "torch", False))
    if not quick:
        plan += [("%s@%d" % (v, other_threads), workers["mx_other"], v, False) for v in ("fused", "int8")]
    return plan


def measure(specs, plan, rounds, latency_iters, throughput_iters):
    """``{(net, label): {'b1': [s, ...], 'bN': [img/s per round]}}``, rounds interleaved."""
    results = {}
    for _ in range(rounds):
        for spec in specs:
            for label, work, variant, batch1_only in plan:
                entry = results.setdefault((spec["net"], label), {"b1": [], "bN": []})
                entry["b1"] += work.ask(op="time", spec=spec, variant=variant, batch=1, iters=latency_iters)[
                    "times"
                ]
                if not batch1_only:
                    batch = throughput_batch(spec["net"])
                    times = work.ask(
                        op="time", spec=spec, variant=variant, batch=batch, iters=throughput_iters
                    )["times"]
                    entry["bN"].append(batch * len(times) / sum(times))
    return results


def accuracy(specs, plan):
    """``{(net, label): top-1 (or agreement with fp32 for nets without labels)}``."""
    scores = {}
    for spec in specs:
        batch = throughput_batch(spec["net"])
        preds = {
            label: work.ask(op="predict", spec=spec, variant=variant, batch=batch)["pred"]
            for label, work, variant, batch1_only in plan
            if "@" not in label and variant != "torch"
        }
        for label, pred in preds.items():
            truth = spec["labels"] if spec["labels"] is not None else preds["fp32"]
            scores[(spec["net"], label)] = float(np.mean(np.asarray(pred) == np.asarray(truth)))
    return scores


def _row(net, label, entry, scores, base):
    b1 = sorted(entry["b1"])
    p99 = b1[min(len(b1) - 1, int(round(0.99 * (len(b1) - 1))))] if b1 else float("nan")
    thr = statistics.median(entry["bN"]) if entry["bN"] else None
    score = scores.get((net, label))
    return "| %s | %s | %s | %.2f | %.2f | %s | %s |" % (
        net,
        label,
        "%.4f" % score if score is not None else "n/a",
        1e3 * statistics.median(b1),
        1e3 * p99,
        "%.0f" % thr if thr else "-",
        "%.2fx" % (thr / base) if thr and base else "-",
    )


def report(specs, results, scores, plan):
    print("| net | variant | top-1 | b1 median ms | b1 p99 ms | img/s at 64 (224 px: 16) | x fused |")
    print("|---|---|---|---|---|---|---|")
    for spec in specs:
        net = spec["net"]
        base = statistics.median(results[(net, "fused")]["bN"])
        for label, *_ in plan:
            print(_row(net, label, results[(net, label)], scores, base))
    print()
    for spec in specs:
        print(ratios(spec["net"], results, scores))


def ratios(net, results, scores):
    """One line: the targets' ratios for ``net`` (throughput: higher is better; batch 1:
    the inverse of the median latencies)."""

    def speedup(a, b, key):
        fa, fb = (statistics.median(results[(net, x)][key]) for x in (a, b))
        return fb / fa if key == "b1" else fa / fb

    batch = throughput_batch(net)
    return (
        "%s: int8/fused at %d %.2fx; fused/ort_fp32 b1 %.2fx b%d %.2fx; int8/ort_int8 b1 %.2fx "
        "b%d %.2fx; int8 - fp32 top-1 %+.2f points"
        % (
            net,
            batch,
            speedup("int8", "fused", "bN"),
            speedup("fused", "ort_fp32", "b1"),
            batch,
            speedup("fused", "ort_fp32", "bN"),
            speedup("int8", "ort_int8", "b1"),
            batch,
            speedup("int8", "ort_int8", "bN"),
            100 * (scores[(net, "int8")] - scores[(net, "fp32")]),
        )
    )


def _onednn_profile(spec, variant, batch, threads, iters):
    """``{primitive impl layout: ms per forward}`` of ours, from DNNL_VERBOSE=1."""
    from mxcnn.graph import kernel_audit

    work = Worker("mx", threads, env={"DNNL_VERBOSE": "1"})
    work.ask(op="time", spec=spec, variant=variant, batch=batch, iters=1, marker="BENCH-MARK")
    work.lines = []
    work.ask(op="time", spec=spec, variant=variant, batch=batch, iters=iters)
    work.close()
    totals = {}
    for record in kernel_audit.parse(work.lines):
        key = "%s %s %s" % (record.primitive, record.impl, record.layouts.split(":")[0])
        totals[key] = totals.get(key, 0.0) + record.ms / (iters + WARMUP)
    return totals


def profile(spec, variants, threads, results, iters=10):
    """Kernel time per forward at batch 1 and the throughput batch, beside the measured median
    wall time: ours from oneDNN's DNNL_VERBOSE, ONNX Runtime from its own node profiler.  The
    difference is the framework's own time (dispatch, copies in and out)."""
    net = spec["net"]
    for batch, key in ((1, "b1"), (throughput_batch(net), "bN")):
        for variant in variants:
            if variant.startswith("ort_"):
                work = Worker("ort", threads)
                totals = work.ask(op="ort_profile", spec=spec, variant=variant, batch=batch, iters=iters)
                work.close()
                totals.pop("session", None)
            else:
                totals = _onednn_profile(spec, variant, batch, threads, iters)
            kernels = sum(totals.values())
            wall = _wall_ms(results.get((net, variant)), key, batch)
            print("%s %s batch %d: kernels %.3f ms per forward, measured %s" % (
                net, variant, batch, kernels, "%.3f ms" % wall if wall else "-"))
            for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:6]:
                print("    %-60s %8.3f ms" % (name, ms))


def _wall_ms(entry, key, batch):
    """Median ms per forward of a measured variant (``None`` when it was not measured)."""
    if not entry or not entry[key]:
        return None
    value = statistics.median(entry[key])
    return 1e3 * value if key == "b1" else 1e3 * batch / value


def cpu_line():
    from mxcnn.graph import kernel_audit

    return "CPU: %s, %d cores visible; flags: %s" % (
        kernel_audit.cpu_name(),
        os.cpu_count(),
        " ".join(kernel_audit.isa_flags()),
    )


def _torch_python(explicit):
    default = os.path.join(ROOT, ".venv-torch", "bin", "python")
    for path in (explicit, os.environ.get("MXCNN_TORCH_PYTHON"), default):
        if path and os.path.exists(path):
            return path
    return None


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated: %s" % ", ".join(NETS))
    parser.add_argument("--quick", action="store_true", help="ResNet-20, 1 round, 1,000 test images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-iters", type=int, default=50)
    parser.add_argument("--throughput-iters", type=int, default=5)
    parser.add_argument("--profile", help="variants to profile per primitive (e.g. fused,int8)")
    parser.add_argument("--torch-python", help="interpreter with torch (default .venv-torch)")
    parser.add_argument("--worker", choices=("mx", "ort", "torch"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads of every framework (ours fused/int8 also run at the other of 1/2)",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads)
    nets = ["resnet20"] if args.quick else [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in nets if n not in NETS]
    if unknown:
        raise SystemExit("bench/inference.py: unknown net(s) %s; choose from %s" % (unknown, ", ".join(NETS)))
    rounds = 1 if args.quick else args.rounds
    from mxcnn.data import stats as data_stats

    data = prepare_data()
    stats = data_stats.load_stats(data_stats.stats_files_beside(data[0])[0])
    specs = [prepare(net, data, stats, 1000 if args.quick else 5000) for net in nets]
    torch_py = _torch_python(args.torch_python)
    other = 1 if args.threads > 1 else 2
    workers = {
        "mx": Worker("mx", args.threads),
        "mx_other": Worker("mx", other),
        "ort": Worker("ort", args.threads),
    }
    if torch_py:
        workers["torch"] = Worker("torch", args.threads, python=torch_py)
    plan = _plan(workers, args.quick, other)
    print(cpu_line())
    print("command: python bench/inference.py %s" % " ".join(argv if argv is not None else sys.argv[1:]))
    scores = accuracy(specs, plan)
    results = measure(specs, plan, rounds, args.latency_iters, args.throughput_iters)
    for work in workers.values():
        work.close()
    report(specs, results, scores, plan)
    if args.profile:
        for spec in specs:
            chosen = [v for v in args.profile.split(",") if v in MX_VARIANTS + ("ort_fp32", "ort_int8")]
            profile(spec, chosen, args.threads, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
