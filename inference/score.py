"""Evaluate a checkpoint on a .rec file (top-1/top-5, img/s) or predict classes of image files.

    python inference/score.py --model-prefix runs/r20 --load-epoch 160 --data-val cifar10_val.rec
    python inference/score.py --model-prefix runs/r20 --load-epoch 160 --data-val other_test.rec
    python inference/score.py --model-prefix runs/r20 --load-epoch 160 --predict cat.png dog.jpg --top-k 5

Any MXNet checkpoint (``PREFIX-symbol.json`` + ``PREFIX-NNNN.params``) works; a grouped
multi-output symbol (deep supervision) is scored on output 0.  ``.rec`` data goes through
the data package's validation iterator (no augmentation); every record is counted exactly
once (the padding of the last batch is dropped).  ``img/s`` covers reading, decoding and
the forward passes.

Normalisation (mean/std), image shape and class names come from ``--stats`` when given;
else from the checkpoint itself (the ``preprocess`` record the trainer writes into each
``PREFIX-NNNN.json``: the training data's, whatever test set is scored); else, for older
checkpoints, from ``<prefix>_stats.json`` beside the .rec.  A stats file scored against
another set's .rec lends only its mean/std, shape and classes (its record counts describe
its own files).  ``--cpus N`` / ``--gpus`` mean what they mean in train_cifar.py.
A model trained with ImageNet-style augmentation (the checkpoint records it) is scored on
the centre crop of each image resized to size/0.875, as ``--predict`` classifies images.
"""
import os
import sys

from mxcnn import common
from mxcnn.common import runtime
from mxcnn.inference import tta


def thread_defaults(argv, environ):
    """OMP_NUM_THREADS from ``--threads``; else the user's, else runtime.configure's one thread
    per core, at every batch size: on a quiet 2-core Xeon two threads took batch-1 latency from
    0.71 to 0.50 ms (ResNet-20) and from 5.2 to 2.9 ms (WRN-16-4) (bench/inference.py,
    ``fused@2``).  Must run before mxnet is imported."""
    threads = runtime.flag_value(argv, "--threads")
    if threads and threads.isdigit() and int(threads) >= 1:
        environ["OMP_NUM_THREADS"] = threads


thread_defaults(sys.argv[1:], os.environ)
if __name__ == "__main__":  # the command's default; importing this module changes nothing
    runtime.inference_engine(sys.argv[1:], os.environ)
runtime.configure()  # before mxnet is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mxcnn.data import iterators, recfile  # noqa: E402
from mxcnn.data import stats as data_stats  # noqa: E402
from mxcnn.data.images import MAX_IMAGE_PIXELS  # noqa: E402
from mxcnn.inference.predict import PredictError, Predictor, checkpoint_preprocess, load_model, make_contexts  # noqa: E402

__all__ = ["score_rec", "rec_preprocess", "main"]

PROG = "score.py"
NORMALISATION_KEYS = ("mean", "std", "image_shape", "classes", "num_classes")


def _check_input_file(path, what):
    if os.path.isdir(path):
        raise PredictError("%s %s is a folder; give the .rec file" % (what, path))
    if not os.path.isfile(path):
        raise PredictError("%s %s does not exist" % (what, path))


def _describes(stats, rec_path):
    """True when ``stats`` came from the stats file of ``rec_path``'s own data set."""
    source = stats.get("_source")
    return bool(source) and os.path.isfile(source) and any(
        os.path.samefile(source, s) for s in data_stats.stats_files_beside(rec_path))


def _check_classes(stats, rec_path):
    """The data set of ``rec_path`` (its stats beside it) must name the same classes."""
    own = [s for s in data_stats.stats_files_beside(rec_path)
           if not stats.get("_source") == s]
    if not own or not stats.get("classes"):
        return
    try:
        theirs = data_stats.load_stats(own[0]).get("classes")
    except common.UserError:  # a broken stats file of the other set is not ours to judge
        return
    if theirs and list(theirs) != list(stats["classes"]):
        raise PredictError("%s names other classes (%s ...) than the model (%s, from %s ...): its "
                           "labels mean other things" % (own[0], ", ".join(theirs[:3]), stats["_source"],
                                                         ", ".join(stats["classes"][:3])))


def rec_preprocess(prefix, epoch, data_val, stats=None):
    """The stats dict to score ``data_val`` with (see the module docstring), or None."""
    if stats is not None:
        chosen = data_stats.load_stats(stats)
        if not _describes(chosen, data_val):  # another test set: normalisation only
            chosen = dict({k: chosen[k] for k in NORMALISATION_KEYS if k in chosen},
                          _source=chosen["_source"])
    else:
        chosen = checkpoint_preprocess(prefix, epoch)
        if chosen is None:  # older checkpoints: the data set's own stats
            beside = data_stats.stats_files_beside(data_val)
            return data_stats.load_stats(beside[0]) if beside else None
    _check_classes(chosen, data_val)
    return chosen


def _evaluation(prefix, epoch, stats):
    """How the model is evaluated: as it was trained (the ``augment`` of the checkpoint's
    preprocess record): ``imagenet`` resizes the shorter side to size/0.875 before the centre
    crop; without a record, ``imagenet`` for images of several sizes, else ``cifar``."""
    record = stats if stats and stats.get("augment") else checkpoint_preprocess(prefix, epoch)
    if record and record.get("augment"):
        return record["augment"]
    mixed = bool(stats) and "image_shape" in stats and stats["image_shape"] is None
    return "imagenet" if mixed else "cifar"


def _scoring_batch(batch_size, records, devices):
    """``batch_size`` capped at the record count, rounded up to a multiple of the devices."""
    batch = max(1, min(int(batch_size), int(records)))
    return -(-batch // devices) * devices


def score_rec(prefix, epoch, data_val, batch_size=128, image_shape=None, stats=None,
              contexts=None, top_k=(1, 5), views=(), dtype="float32"):
    """Top-k accuracies of checkpoint ``prefix``/``epoch`` on ``data_val`` (.rec); with TTA
    ``views`` (inference/tta.py, e.g. ``('flip', 'translate')``) of the mean probabilities.

    Returns ``{'top-1': acc, 'top-5': acc, 'samples': n, 'seconds': s, 'img/s': r}``.
    """
    import mxnet as mx
    _check_input_file(data_val, "validation file")
    stats = rec_preprocess(prefix, epoch, data_val, stats)
    shape = tuple(image_shape or (stats or {}).get("image_shape") or (3, 32, 32))
    total = recfile.count_records(data_val)
    if total == 0:
        raise PredictError("%s holds no records" % data_val)
    batch_size = _scoring_batch(batch_size, total, len(contexts or [None]))
    module, _ = load_model(prefix, epoch, shape, batch_size, contexts, dtype=dtype)
    _, val_iter = iterators.get_rec_iters(None, data_val, batch_size, shape, stats=stats,
                                          augmentation=_evaluation(prefix, epoch, stats))
    correct = {k: 0 for k in top_k}
    seen = 0
    start = time.time()

    def forward(data):
        module.forward(mx.io.DataBatch([data]), is_train=False)
        return module.get_outputs()[0]

    for batch in val_iter:
        probs = tta.predict(forward, batch.data[0], views)
        labels = batch.label[0].asnumpy().astype(np.int64)
        valid = min(len(labels) - int(batch.pad or 0), total - seen)
        if valid <= 0:
            break
        probs, labels = probs[:valid], labels[:valid]
        if probs.ndim != 2 or probs.shape[1] <= int(labels.max()):
            raise PredictError("the network has %s outputs per image but the .rec has label %d: "
                               "checkpoint and data do not belong together"
                               % (probs.shape[1:] or "no", int(labels.max())))
        order = np.argsort(-probs, axis=1)
        for k in top_k:
            correct[k] += int((order[:, :k] == labels[:, None]).any(axis=1).sum())
        seen += valid
    seconds = time.time() - start
    if seen == 0:
        raise PredictError("%s holds no records" % data_val)
    result = {"top-%d" % k: correct[k] / float(seen) for k in top_k}
    result.update(samples=seen, seconds=seconds, **{"img/s": seen / max(seconds, 1e-9)})
    return result


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Top-1/top-5 accuracy of a checkpoint on a .rec file, or top-k "
                               "predictions for image files.")
    parser.add_argument("--model-prefix", required=True, help="checkpoint prefix (PREFIX-symbol.json)")
    parser.add_argument("--load-epoch", type=int, required=True,
                        help="N of PREFIX-NNNN.params (epochs completed)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--data-val", help="RecordIO file to evaluate (any test set)")
    what.add_argument("--predict", nargs="+", metavar="IMAGE", help="image files to classify")
    parser.add_argument("--stats", help="stats JSON (mean/std, class names); default: the "
                                        "checkpoint's own, else <prefix>_stats.json beside the .rec")
    parser.add_argument("--image-shape", help="C,H,W (default: the checkpoint's or the stats', "
                                              "else 3,32,32)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per image (--predict)")
    parser.add_argument("--resize", type=int, help="shorter side before the centre crop (--predict; "
                                                   "default: the crop side)")
    parser.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS, metavar="N",
                        help="refuse image files larger than N pixels (width x height), checked "
                             "before decoding (--predict; default %d)" % MAX_IMAGE_PIXELS)
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--gpus", help="GPU ids, e.g. 0,1")
    devices.add_argument("--cpus", help="number of CPU contexts, as in train_cifar.py (default 1)")
    parser.add_argument("--tta", default="none", metavar="VIEWS",
                        help="test-time augmentation for --data-val: none, flip, translate or "
                             "flip,translate (mean probability over the views)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="compute type: bfloat16 runs convolutions in bfloat16 (CPUs with "
                             "avx512_bf16; float32 weights and outputs, as training's --dtype); "
                             "an int8 checkpoint (inference/quantize.py) runs as it is")
    parser.add_argument("--threads", type=int, help="OpenMP threads (default: one per core; on a machine "
                                                    "shared with other jobs 1 is steadier; OMP_NUM_THREADS "
                                                    "also works)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _check_numbers(args):
    for flag, value in (("--batch-size", args.batch_size), ("--top-k", args.top_k),
                        ("--resize", args.resize), ("--max-image-pixels", args.max_image_pixels),
                        ("--threads", args.threads)):
        if value is not None and value < 1:
            raise PredictError("%s must be at least 1, got %d" % (flag, value))


def _predict(args, shape, contexts):
    predictor = Predictor(args.model_prefix, args.load_epoch, shape, args.stats, contexts,
                          batch_size=min(args.batch_size, len(args.predict)), resize=args.resize,
                          max_pixels=args.max_image_pixels, dtype=args.dtype)
    results = predictor.predict_files(args.predict, args.top_k)
    if predictor.stats is None:  # after the work: an error stays the only line
        print("%s: note: neither --stats nor a preprocess record in the checkpoint: images are "
              "not normalised and classes are shown as numbers" % PROG, file=sys.stderr)
    if args.json:
        print(json.dumps({p: [{"class": i, "name": n, "probability": round(pr, 6)}
                              for i, n, pr in r] for p, r in zip(args.predict, results)}, indent=1))
    else:
        for path, result in zip(args.predict, results):
            print("%s: %s" % (path, ", ".join("%s %.4f" % (n, pr) for _, n, pr in result)))


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mxcnn import symbols
    try:
        _check_numbers(args)
        shape = symbols.layers.as_image_shape(args.image_shape) if args.image_shape else None
        contexts = make_contexts(args.gpus, args.cpus)
        if args.predict:
            _predict(args, shape, contexts)
            return 0
        result = score_rec(args.model_prefix, args.load_epoch, args.data_val, args.batch_size,
                           shape, args.stats, contexts, views=tta.parse(args.tta),
                           dtype=args.dtype)
    except common.UserError as err:  # bad input; anything else is a bug and keeps its traceback
        return common.cli_error(PROG, err)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("%s-%04d on %s: top-1 %.4f  top-5 %.4f  (%d images, %.1f s, %.0f img/s)"
              % (args.model_prefix, args.load_epoch, args.data_val, result["top-1"],
                 result.get("top-5", float("nan")), result["samples"], result["seconds"],
                 result["img/s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
