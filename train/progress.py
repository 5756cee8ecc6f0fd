"""Training progress: MXNet-format log lines, per-epoch JSON lines, an error-curve PNG, a tqdm bar.

The log lines match ``mx.callback.Speedometer`` and ``Module.fit`` so MXNet's
``tools/parse_log.py`` reads them::

    Epoch[0] Batch [20-40]	Speed: 452.31 samples/sec	accuracy=0.312500	cross-entropy=1.830000
    Epoch[0] Train-accuracy=0.351562
    Epoch[0] Time cost=21.042
    Epoch[0] Validation-accuracy=0.402344

(``Epoch[e]`` counts from 0 as in MXNet; the checkpoint written after it is ``-%04d`` % (e+1).)
``<prefix>-log.jsonl`` holds one JSON object per epoch with ``epoch`` = epochs completed.
"""
import json
import logging
import math
import os
import sys
import time

from mxcnn import common
from mxcnn.common import files

__all__ = ["LOG_FORMAT", "setup_logging", "BatchMetrics", "Speedometer", "EpochLog",
           "read_log", "plot_error_curves"]

LOG_FORMAT = "%(asctime)-15s Node[{rank}] %(message)s"


def setup_logging(rank=0, log_file=None):
    """Log INFO to stderr (and ``log_file``) in MXNet's fit.py format; return the logger."""
    logger = logging.getLogger("mxcnn.train")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(LOG_FORMAT.format(rank=rank))
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


class BatchMetrics:
    """Accuracy and cross-entropy of the main head, summed over samples (padding excluded)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.samples = 0
        self.correct = 0
        self.loss_sum = 0.0

    def update(self, probs, hard_labels, target=None):
        """``probs`` (n, K) softmax output, ``hard_labels`` (n,), ``target`` (n, K) soft labels or None.

        Returns the batch's mean cross-entropy (NaN/Inf if the output is not finite).
        """
        import numpy as np
        n = len(hard_labels)
        if n == 0:
            return 0.0
        if target is None:
            picked = probs[np.arange(n), hard_labels.astype(np.int64)]
            losses = -np.log(np.maximum(picked, 1e-12))
        else:
            losses = -(target * np.log(np.maximum(probs, 1e-12))).sum(axis=1)
        if not np.all(np.isfinite(probs)):
            return float("nan")
        self.samples += n
        self.correct += int((probs.argmax(axis=1) == hard_labels).sum())
        self.loss_sum += float(losses.sum())
        return float(losses.mean())

    @property
    def accuracy(self):
        return self.correct / self.samples if self.samples else float("nan")

    @property
    def loss(self):
        return self.loss_sum / self.samples if self.samples else float("nan")

    def name_value(self):
        return [("accuracy", self.accuracy), ("cross-entropy", self.loss)]


class Speedometer:
    """``Epoch[e] Batch [a-b]\\tSpeed: x samples/sec\\tname=value`` every ``frequent`` batches."""

    def __init__(self, logger, batch_size, frequent=50):
        self.logger = logger
        self.batch_size = batch_size
        self.frequent = frequent
        self.window = BatchMetrics()
        self.tic = time.time()
        self.last = 0

    def start_epoch(self):
        self.window.reset()
        self.tic = time.time()
        self.last = 0

    def __call__(self, epoch, nbatch):
        """Call after batch ``nbatch`` (1-based count of batches done in this epoch)."""
        if self.frequent <= 0 or nbatch % self.frequent:
            return None
        speed = (nbatch - self.last) * self.batch_size / max(time.time() - self.tic, 1e-9)
        msg = "Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec" % (epoch, self.last, nbatch, speed)
        msg += "".join("\t%s=%f" % nv for nv in self.window.name_value())
        self.logger.info(msg)
        self.window.reset()
        self.tic = time.time()
        self.last = nbatch
        return speed


class EpochLog:
    """``<prefix>-log.jsonl`` (one object per epoch) and ``<prefix>-curves.png``, kept in step."""

    def __init__(self, prefix, title=None, plot=True):
        self.path = prefix + "-log.jsonl"
        self.png = prefix + "-curves.png"
        self.title = title or os.path.basename(prefix)
        self.plot = plot
        self.records = []

    def resume(self, epochs_done):
        """Keep the records of the first ``epochs_done`` epochs (a resumed run rewrites the rest)."""
        self.records = [r for r in read_log(self.path) if r.get("epoch", 0) <= epochs_done] \
            if os.path.exists(self.path) else []
        self._write()

    def append(self, record):
        self.records = [r for r in self.records if r.get("epoch") != record["epoch"]] + [record]
        self._write()

    def _write(self):
        """Rewrite the log (and the curves); a failed write (a full disk) is a one-line
        ``common.UserError`` naming the folder and its free space, the old files intact."""
        try:
            common.atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                        for r in self.records))
            if self.plot and self.records:
                plot_error_curves([(self.title, self.records)], self.png, title=self.title)
        except OSError as err:
            why = files.write_failure(os.path.dirname(os.path.abspath(self.path)), err)
            raise common.UserError("cannot write the training log %s: %s; free space or choose "
                                   "another --model-prefix" % (self.path, why)) from None


def read_log(path):
    """The list of per-epoch records in a ``-log.jsonl`` file (blank lines skipped)."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_error_curves(runs, path, title=None):
    """Plot train (dashed) and validation (solid) error in % against epoch for each run.

    ``runs`` is a list of ``(label, records)``; the figure style follows He et al. 2016,
    Fig. 6 (one colour per run).  Written atomically as PNG with the Agg backend.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (label, records) in enumerate(runs):
        colour = "C%d" % (index % 10)
        for key, style, suffix in (("train_error", "--", " train"), ("val_error", "-", " val")):
            points = [(r["epoch"], 100.0 * r[key]) for r in records
                      if r.get(key) is not None and math.isfinite(r[key])]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, color=colour, label=label + suffix, linewidth=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        common.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
