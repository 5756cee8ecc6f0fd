"""Overlay the error curves of several runs (the papers' depth-comparison figures).

    python train/plot_curves.py runs/cifar10-resnet20/model-log.jsonl \\
        runs/cifar10-resnet56/model-log.jsonl --labels ResNet-20,ResNet-56 -o depth.png

Reads the ``<prefix>-log.jsonl`` files written by ``train_cifar.py`` (a run prefix or its
folder works too) and draws train error dashed and validation error solid against epoch,
one colour per run, as in He et al. 2016, Fig. 6.
"""
import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import numbers  # noqa: E402
import os
import sys

from mxcnn import common  # noqa: E402
from mxcnn.train.progress import plot_error_curves, read_log  # noqa: E402

__all__ = ["find_log", "load_run", "main"]

PROG = "plot_curves.py"
_LOG_SUFFIX = "-log.jsonl"


def find_log(path):
    """The ``-log.jsonl`` for a log file, a run prefix or a run folder (one log inside)."""
    if os.path.isfile(path):
        return path
    if os.path.isfile(path + _LOG_SUFFIX):
        return path + _LOG_SUFFIX
    if os.path.isdir(path):
        logs = sorted(glob.glob(os.path.join(glob.escape(path), "*" + _LOG_SUFFIX)))
        if len(logs) == 1:
            return logs[0]
        if logs:
            raise common.UserError("%s holds several logs (%s); name one"
                                   % (path, ", ".join(map(os.path.basename, logs))))
    raise common.UserError("no training log at %s (expected a -log.jsonl file, run prefix or folder)"
                           % path)


def _is_epoch(record):
    """A record as ``train.progress.EpochLog`` writes it: numeric epoch, numeric or null errors."""
    def number(value):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return (isinstance(record, dict) and number(record.get("epoch"))
            and all(record.get(k) is None or number(record[k]) for k in ("train_error", "val_error")))


def _check_records(log_path, records):
    """UserError unless ``records`` are one or more epoch records."""
    if not records:
        raise common.UserError("%s has no epochs yet" % log_path)
    for number, record in enumerate(records, 1):
        if not _is_epoch(record):
            raise common.UserError(
                "%s: record %d is not a training-log epoch (wants an object with a numeric 'epoch' "
                "and numeric or null 'train_error'/'val_error', got %.80s); is it a -log.jsonl "
                "written by train_cifar.py?" % (log_path, number, json.dumps(record)))


def load_run(path, label=None):
    """``(label, records)`` of one run; UserError naming the file if it cannot be used."""
    log_path = find_log(path)
    try:
        records = read_log(log_path)
    except OSError as err:
        raise common.UserError("cannot read %s (%s)" % (log_path, err.strerror or err))
    except ValueError as err:  # not JSON lines, or not text (UnicodeDecodeError)
        raise common.UserError("cannot read %s: not JSON lines (%s)" % (log_path, err))
    _check_records(log_path, records)
    if label is None:
        label = os.path.basename(log_path)[: -len(_LOG_SUFFIX)] \
            or os.path.basename(os.path.dirname(os.path.abspath(log_path)))
        if label == "model":
            label = os.path.basename(os.path.dirname(os.path.abspath(log_path)))
    return label, records


def _check_output(path):
    """UserError unless ``path`` names a file that can be created (its folder may be made)."""
    if not path or os.path.basename(path) in ("", ".", ".."):
        raise common.UserError("-o %r does not name a file; give e.g. -o curves.png" % path)
    if os.path.isdir(path):
        raise common.UserError("cannot write %s: it is a folder; give a file name" % path)
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # atomic_write makes the missing folders
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise common.UserError("cannot write %s: %s is a file, not a folder; choose another path"
                               % (path, folder))


def _plot(runs, path, title):
    _check_output(path)
    try:
        plot_error_curves(runs, path, title=title)
    except ImportError as err:
        raise common.UserError("plotting needs matplotlib (%s): pip install matplotlib" % err)
    except OSError as err:  # read-only folder or file system, disk full, ...
        raise common.UserError("cannot write %s: %s; choose a writable folder"
                               % (path, err.strerror or err))


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="-log.jsonl files, run prefixes or run folders")
    parser.add_argument("--labels", help="comma-separated legend labels (default: file names)")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default curves.png)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [None] * len(args.runs)
    try:
        if len(labels) != len(args.runs):
            raise common.UserError("--labels has %d names for %d runs" % (len(labels), len(args.runs)))
        runs = [load_run(path, label) for path, label in zip(args.runs, labels)]
        _plot(runs, args.output, args.title)
    except common.UserError as err:
        return common.cli_error(PROG, err)
    for label, records in runs:
        vals = [r["val_error"] for r in records if r.get("val_error") is not None]
        print("%s: %d epochs, final val error %s, best %s" % (
            label, len(records), "%.2f%%" % (100 * vals[-1]) if vals else "n/a",
            "%.2f%%" % (100 * min(vals)) if vals else "n/a"))
    print("wrote %s" % args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
