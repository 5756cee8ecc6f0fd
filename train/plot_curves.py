"""Overlay the error curves of several runs (the papers' depth-comparison figures).

    python train/plot_curves.py runs/cifar10-resnet20/model-log.jsonl \\
        runs/cifar10-resnet56/model-log.jsonl --labels ResNet-20,ResNet-56 -o depth.png

Reads the ``<prefix>-log.jsonl`` files written by ``train_cifar.py`` (a run prefix or its
folder works too) and draws train error dashed and validation error solid against epoch,
one colour per run, as in He et al. 2016, Fig. 6.
"""
import os
import sys

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import train  # noqa: F401
    __package__ = "train"

import argparse  # noqa: E402
import glob  # noqa: E402

from .progress import plot_error_curves, read_log  # noqa: E402

__all__ = ["find_log", "main"]


def find_log(path):
    """The ``-log.jsonl`` for a log file, a run prefix or a run folder (one log inside)."""
    if os.path.isfile(path):
        return path
    if os.path.isfile(path + "-log.jsonl"):
        return path + "-log.jsonl"
    if os.path.isdir(path):
        logs = sorted(glob.glob(os.path.join(glob.escape(path), "*-log.jsonl")))
        if len(logs) == 1:
            return logs[0]
        if logs:
            raise ValueError("%s holds several logs (%s); name one" % (path, ", ".join(map(os.path.basename, logs))))
    raise ValueError("no training log at %s (expected a -log.jsonl file, run prefix or folder)" % path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="plot_curves.py", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="-log.jsonl files, run prefixes or run folders")
    parser.add_argument("--labels", help="comma-separated legend labels (default: file names)")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default curves.png)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(args.runs):
        print("plot_curves.py: error: --labels has %d names for %d runs" % (len(labels), len(args.runs)),
              file=sys.stderr)
        return 2
    runs = []
    try:
        for index, path in enumerate(args.runs):
            log_path = find_log(path)
            try:
                records = read_log(log_path)
            except (OSError, ValueError) as err:
                raise ValueError("cannot read %s (%s)" % (log_path, err))
            if not records:
                raise ValueError("%s has no epochs yet" % log_path)
            label = labels[index] if labels else os.path.basename(log_path)[: -len("-log.jsonl")] \
                or os.path.basename(os.path.dirname(os.path.abspath(log_path)))
            if label == "model":
                label = os.path.basename(os.path.dirname(os.path.abspath(log_path)))
            runs.append((label, records))
    except ValueError as err:
        print("plot_curves.py: error: %s" % err, file=sys.stderr)
        return 2
    plot_error_curves(runs, args.output, title=args.title)
    for label, records in runs:
        vals = [r["val_error"] for r in records if r.get("val_error") is not None]
        print("%s: %d epochs, final val error %s, best %s" % (
            label, len(records), "%.2f%%" % (100 * vals[-1]) if vals else "n/a",
            "%.2f%%" % (100 * min(vals)) if vals else "n/a"))
    print("wrote %s" % args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
