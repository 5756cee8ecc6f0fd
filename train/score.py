"""Evaluate a checkpoint on a .rec file (top-1/top-5, img/s) or predict classes of image files.

    python train/score.py --model-prefix runs/r20 --load-epoch 160 --data-val cifar10_val.rec
    python train/score.py --model-prefix runs/r20 --load-epoch 160 --predict cat.png dog.jpg --top-k 5

Any MXNet checkpoint (``PREFIX-symbol.json`` + ``PREFIX-NNNN.params``) works; a grouped
multi-output symbol (deep supervision) is scored on output 0.  ``.rec`` data goes through
the data package's validation iterator (no augmentation, normalised with the stats JSON:
``--stats``, else ``<prefix>_stats.json`` beside the .rec); every record is counted exactly
once (the padding of the last batch is dropped).  ``img/s`` covers reading, decoding and
the forward passes.  Predictions use the same stats for mean/std and class names.
"""
import os
import sys

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import train  # noqa: F401
    __package__ = "train"

from . import common, runtime

runtime.configure()  # before mxnet is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from .predict import PredictError, Predictor, data_module, load_model, make_contexts  # noqa: E402

__all__ = ["score_rec", "main"]

PROG = "score.py"


def score_rec(prefix, epoch, data_val, batch_size=128, image_shape=None, stats=None,
              contexts=None, top_k=(1, 5)):
    """Top-k accuracies of checkpoint ``prefix``/``epoch`` on ``data_val`` (.rec).

    Returns ``{'top-1': acc, 'top-5': acc, 'samples': n, 'seconds': s, 'img/s': r}``.
    """
    import mxnet as mx
    iterators, recfile = data_module("iterators"), data_module("recfile")
    if not os.path.isfile(data_val):
        raise PredictError("validation file %s does not exist" % data_val)
    try:
        stats = iterators.load_stats(stats, rec_path=data_val)
        if stats is None:  # also accept <prefix>_stats.json beside <prefix>.rec
            beside = os.path.splitext(data_val)[0] + "_stats.json"
            stats = iterators.load_stats(beside) if os.path.isfile(beside) else None
        shape = tuple(image_shape or (stats or {}).get("image_shape") or (3, 32, 32))
        _, val_iter = iterators.get_rec_iters(None, data_val, batch_size, shape, stats=stats)
        total = recfile.count_records(data_val)
    except ValueError as err:  # DataError
        raise PredictError(str(err))
    module, _ = load_model(prefix, epoch, shape, batch_size, contexts)
    correct = {k: 0 for k in top_k}
    seen = 0
    start = time.time()
    for batch in val_iter:
        module.forward(mx.io.DataBatch(batch.data), is_train=False)
        probs = module.get_outputs()[0].asnumpy()
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
    what.add_argument("--data-val", help="RecordIO file to evaluate")
    what.add_argument("--predict", nargs="+", metavar="IMAGE", help="image files to classify")
    parser.add_argument("--stats", help="stats JSON (mean/std, class names); default: "
                                        "<prefix>_stats.json beside the .rec")
    parser.add_argument("--image-shape", help="C,H,W (default: the stats' image_shape, else 3,32,32)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per image (--predict)")
    parser.add_argument("--resize", type=int, help="shorter side before the centre crop (--predict; "
                                                   "default: the crop side)")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--gpus", help="GPU ids, e.g. 0,1")
    devices.add_argument("--cpus", help="CPU device ids (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    symbols = common.sibling("symbols")
    try:
        if args.batch_size < 1:
            raise PredictError("--batch-size must be at least 1, got %d" % args.batch_size)
        shape = symbols.layers.as_image_shape(args.image_shape) if args.image_shape else None
        contexts = make_contexts(args.gpus, args.cpus)
        if args.predict:
            if args.stats is None:
                print("%s: note: no --stats given: images are not normalised and classes are "
                      "shown as numbers" % PROG, file=sys.stderr)
            predictor = Predictor(args.model_prefix, args.load_epoch, shape, args.stats, contexts,
                                  batch_size=min(args.batch_size, len(args.predict)),
                                  resize=args.resize)
            results = predictor.predict_files(args.predict, args.top_k)
            if args.json:
                print(json.dumps({p: [{"class": i, "name": n, "probability": round(pr, 6)}
                                      for i, n, pr in r] for p, r in zip(args.predict, results)},
                                 indent=1))
            else:
                for path, result in zip(args.predict, results):
                    print("%s: %s" % (path, ", ".join("%s %.4f" % (n, pr) for _, n, pr in result)))
            return 0
        result = score_rec(args.model_prefix, args.load_epoch, args.data_val, args.batch_size,
                           shape, args.stats, contexts)
    except (PredictError, ValueError, OSError) as err:
        print("%s: error: %s" % (PROG, err), file=sys.stderr)
        return 2
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
