"""Training and validation iterators over image RecordIO files, and a synthetic one.

    train_iter, val_iter = get_rec_iters("cifar10_train.rec", "cifar10_val.rec", 128)

Both are ``mx.io.DataIter`` giving float32 NCHW ``data`` normalised by the train split's
per-channel mean/std and ``softmax_label`` of shape (B,).  Training batches are augmented
the CIFAR way (He et al. 2016, sec. 4.2): 4-pixel zero padding, a random crop back to
H x W, a random horizontal flip.  Every sample appears exactly once per epoch; the last
short batch is completed with samples from the start of the epoch and reports them in
``batch.pad``.  Shuffling and augmentation of epoch ``e`` depend only on
``(seed, e, part_index)``: call ``train_iter.set_epoch(e)`` then ``reset()`` to replay it.
With ``augmentation="imagenet"`` (images of any size, the native backend) training batches
are random-resized crops (area 8-100%, aspect ratio 3/4-4/3) with random flips, and
evaluation takes the centre crop of the image resized to size/0.875.

Two backends:

* ``"memory"`` decodes the records once into a uint8 (N, H, W, 3) array and augments whole
  batches with vectorised numpy (tens of thousands of images/s on one core), so training is
  not starved by the single decoding thread of ``ImageRecordIter`` on small machines.
* ``"native"`` wraps ``mx.io.ImageRecordIter`` (``pad``/``rand_crop``/``rand_mirror``/
  ``mean``/``std``) for data sets too big to hold decoded in memory.

``backend="auto"`` picks ``"memory"`` when this process's decoded pixels (train part + val)
fit in :data:`IN_MEMORY_MAX_BYTES` (2 GiB: all of CIFAR-10/100 takes 184 MB), else
``"native"``.  Shards (``num_parts``/``part_index``) are the same contiguous record ranges
``ImageRecordIter`` uses with an index file: part k holds records
``[k * ceil(N / parts), (k + 1) * ceil(N / parts))``.
"""
import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mxcnn import common
from mxcnn.data.epoch_iters import AUGMENTATIONS, InMemoryIter, NativeRecIter, SyntheticIter, part_range
from mxcnn.data.errors import DataError
from mxcnn.data.recfile import check_against_stats, count_records, decode_image, read_records, unpack_record
from mxcnn.data.stats import load_stats

__all__ = ["get_rec_iters", "InMemoryIter", "NativeRecIter", "SyntheticIter", "load_stats",
           "IN_MEMORY_MAX_BYTES", "part_range"]

#: ``backend="auto"`` holds the decoded images in memory up to this many bytes.
IN_MEMORY_MAX_BYTES = 2 * 1024 ** 3

_log = logging.getLogger(__name__)


def _check_rec(path, role):
    if not isinstance(path, (str, os.PathLike)):
        raise DataError("%s must be the path of a .rec file, got %r" % (role, path))
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError("%s file %s does not exist; convert the data with data/prepare_cifar.py "
                        "(or pass the right path)" % (role, path))
    return path


def _load_memory(path, num_parts, part_index, threads, num_classes):
    records = read_records(path)
    start, stop = part_range(len(records), num_parts, part_index)
    if start == stop:
        raise DataError("%s: shard %d of %d is empty (%d records)"
                        % (path, part_index, num_parts, len(records)))
    unpacked = [unpack_record(path, offset, rec) for offset, rec in records[start:stop]]
    labels = np.array([label for label, _ in unpacked], np.float32)
    offsets = [offset for offset, _ in records[start:stop]]
    del records
    with ThreadPoolExecutor(max(1, threads)) as pool:  # OpenCV releases the GIL
        images = list(pool.map(lambda i: decode_image(path, offsets[i], unpacked[i][1]),
                               range(len(unpacked))))
    shape = images[0].shape
    for i, img in enumerate(images):
        if img.shape != shape:
            raise DataError("%s: record at byte %d is %dx%d, the first is %dx%d; the in-memory "
                            "backend needs one image size, use backend='native'"
                            % (path, offsets[i], img.shape[1], img.shape[0], shape[1], shape[0]))
    if num_classes is not None:
        bad = (labels < 0) | (labels >= num_classes) | (labels != np.round(labels))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError("%s: record at byte %d has label %g, outside 0..%d of the stats' %d "
                            "classes; the stats file belongs to another conversion"
                            % (path, offsets[i], labels[i], num_classes - 1, num_classes))
    return np.stack(images), labels


def _stored_shape(stats, path):
    shape = stats.get("image_shape") if stats else None
    if isinstance(shape, (list, tuple)) and len(shape) == 3:
        return tuple(int(v) for v in shape)
    offset, rec = read_records(path)[0]
    img = decode_image(path, offset, unpack_record(path, offset, rec)[1])
    return (img.shape[2], img.shape[0], img.shape[1])


def get_rec_iters(data_train: str | os.PathLike[str] | None, data_val: str | os.PathLike[str] | None,
                  batch_size: int, image_shape: str | Sequence[int] = (3, 32, 32),
                  stats: str | os.PathLike[str] | dict[str, Any] | None = None, augment: bool = True,
                  pad: int = 4, rand_mirror: bool | str = True, shuffle: bool = True, seed: int = 0,
                  num_parts: int = 1, part_index: int = 0, preprocess_threads: int | None = None,
                  backend: str = "auto", num_classes: int | None = None, prefetch: int = 0,
                  pin_memory: bool = False, shard_val: bool = False, pad_mode: str = "zero",
                  augmentation: str = "cifar", color_jitter: float = 0.0
                  ) -> tuple[InMemoryIter | NativeRecIter | None, InMemoryIter | NativeRecIter | None]:
    """``(train_iter, val_iter)`` over ``<prefix>_train.rec`` and ``<prefix>_val.rec``
    (either may be None -> that iterator is None; scoring passes only ``data_val``).
    See the module docstring.

    ``stats``: path of ``NAME_stats.json`` or a dict with ``mean``/``std`` (0-255 RGB);
    None looks for ``<prefix>_stats.json`` beside ``data_train`` (or ``data_val`` when there
    is no training file) and, failing that, warns and
    does not normalise.  ``num_classes`` (optional) is checked against the stats.  The
    validation iterator is never shuffled or augmented, and sharded like the training data
    only with ``shard_val`` (a dist job that sums its metrics over workers).  Raises DataError naming
    the file for missing/corrupt records or mismatched stats.

    ``preprocess_threads``: decoding threads (the memory backend's one-off decode; the native
    backend's ``ImageRecordIter``, default 4, which MXNet itself caps at
    ``max(1, omp_get_num_procs() / 2 - 1)``).  ``prefetch`` / ``pin_memory``: the memory
    backend's background batches and page-locked output (:class:`InMemoryIter`); the native
    backend already decodes ahead in its own threads.  ``rand_mirror`` (True, False or
    ``'alternate'``) and ``pad_mode`` (``'zero'`` or ``'reflect'``) are :class:`InMemoryIter`'s;
    the native backend has only random flips and zero padding.  ``augmentation='imagenet'``
    (native backend, images of any size): random-resized crops, flips and ``color_jitter``
    for training, the centre crop of the image resized to size/0.875 for evaluation
    (:func:`~mxcnn.data.epoch_iters.imagenet_options`).
    """
    image_shape = _as_shape(image_shape)
    batch_size, num_parts, part_index = _check_arguments(batch_size, num_parts, part_index,
                                                         backend, data_train, data_val)
    train_path = _check_rec(data_train, "training data") if data_train is not None else None
    val_path = _check_rec(data_val, "validation data") if data_val is not None else None
    stats = load_stats(stats, train_path or val_path)
    counts = {path: count_records(path) for path in (train_path, val_path) if path is not None}
    mean, std, classes = _normalisation(stats, train_path, val_path, num_classes, counts)
    backend = _backend_for(backend, augmentation, stats, train_path, val_path, num_parts,
                           part_index, image_shape, counts)
    shared = dict(batch_size=batch_size, data_shape=image_shape, mean=mean, std=std)
    train_options = dict(augment=augment, pad=pad, rand_mirror=rand_mirror, shuffle=shuffle,
                         seed=seed, part_index=part_index, pad_mode=pad_mode)
    parts = dict(train=(num_parts, part_index), val=(num_parts, part_index) if shard_val else (1, 0))
    if backend == "memory":
        threads = int(preprocess_threads) if preprocess_threads else common.usable_cores()
        train, val = _memory_iters(train_path, val_path, parts, threads, classes, shared,
                                   train_options, dict(prefetch=prefetch, pin_memory=pin_memory))
    else:
        shared.update(augmentation=augmentation, color_jitter=color_jitter)
        train, val = _native_iters(train_path, val_path, parts, shared, train_options,
                                   preprocess_threads)
    for it in (train, val):
        if it is not None:
            it.backend = backend
    return train, val


def _check_arguments(batch_size, num_parts, part_index, backend, data_train, data_val):
    """``(batch_size, num_parts, part_index)`` as ints; ValueError for a caller's mistake."""
    if int(batch_size) < 1:
        raise ValueError("batch_size must be a positive integer, got %r" % (batch_size,))
    if not (int(num_parts) >= 1 and 0 <= int(part_index) < int(num_parts)):
        raise ValueError("need num_parts >= 1 and 0 <= part_index < num_parts, got %r and %r"
                         % (num_parts, part_index))
    if backend not in ("auto", "memory", "native"):
        raise ValueError("backend must be 'auto', 'memory' or 'native', got %r" % (backend,))
    if data_train is None and data_val is None:
        raise ValueError("get_rec_iters needs data_train, data_val or both")
    return int(batch_size), int(num_parts), int(part_index)


def _normalisation(stats, train_path, val_path, num_classes, counts):
    """``(mean, std, num_classes)`` from the loaded stats, checked against the .rec files
    (``counts``: their record counts by path); without stats (None) a warning and no
    normalisation."""
    if stats is None:
        warnings.warn("no stats for %s (no %s); batches are NOT normalised: pass stats= the "
                      "NAME_stats.json written by data/prepare_cifar.py"
                      % (train_path or val_path, "<prefix>_stats.json beside it"), stacklevel=3)
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None if num_classes is None else int(num_classes)
    check_against_stats(stats, (train_path, val_path))  # a partial or mixed set: one line
    stats_classes = stats.get("num_classes")
    if num_classes is not None and stats_classes is not None \
            and int(num_classes) != int(stats_classes):
        raise DataError("%s describes %d classes but num_classes is %d; use the stats of "
                        "this data set or fix num_classes"
                        % (stats["_source"], stats_classes, num_classes))
    for path, key in ((train_path, "num_train"), (val_path, "num_val")):
        if path is not None and stats.get(key) is not None and counts[path] != int(stats[key]):
            raise DataError("%s has %d records but %s says %s=%d; the stats belong to "
                            "another conversion" % (path, counts[path],
                                                    stats["_source"], key, stats[key]))
    classes = int(num_classes) if num_classes is not None else stats_classes
    return stats["mean"], stats["std"], classes


def _backend_for(backend, augmentation, *sizes):
    """The backend to use: ImageNet-style augmentation runs on ``native`` only; ``auto``
    chooses by the size of the decoded data (``sizes``: :func:`_choose_backend`'s arguments)."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError("augmentation must be one of %s, got %r" % (AUGMENTATIONS, augmentation))
    if augmentation == "imagenet":
        if backend == "memory":
            raise DataError("ImageNet-style augmentation (random-resized crops, resized "
                            "evaluation) runs on backend='native' (MXNet's ImageRecordIter); "
                            "use backend='native' or 'auto'")
        _log.info("data backend native (ImageNet-style augmentation in ImageRecordIter)")
        return "native"
    return _choose_backend(*sizes) if backend == "auto" else backend


def _choose_backend(stats, train_path, val_path, num_parts, part_index, image_shape, counts):
    """``memory`` when this worker's decoded colour pixels fit IN_MEMORY_MAX_BYTES, else
    ``native`` (``counts``: the record counts by path)."""
    stored = _stored_shape(stats, train_path or val_path)
    start, stop = part_range(counts[train_path], num_parts, part_index) if train_path else (0, 0)
    n_val = counts[val_path] if val_path else 0
    needed = (stop - start + n_val) * int(np.prod(stored))
    backend = "memory" if needed <= IN_MEMORY_MAX_BYTES and image_shape[0] == 3 else "native"
    _log.info("data backend %s (%.0f MB of decoded pixels, in-memory limit %.0f MB)",
              backend, needed / 2 ** 20, IN_MEMORY_MAX_BYTES / 2 ** 20)
    return backend


def _memory_iters(train_path, val_path, parts, threads, classes, shared, train_options, ahead):
    """``(train, val)`` :class:`InMemoryIter` s over the decoded records (None where no path)."""
    if shared["data_shape"][0] != 3:
        raise DataError("backend='memory' decodes colour images (3 channels); image_shape "
                        "%r needs backend='native'" % (shared["data_shape"],))
    train = val = None
    if train_path is not None:
        images, labels = _load_memory(train_path, *parts["train"], threads, classes)
        train = InMemoryIter(images, labels, **train_options, **ahead, **shared)
    if val_path is not None:
        images, labels = _load_memory(val_path, *parts["val"], threads, classes)
        val = InMemoryIter(images, labels, **ahead, **shared)
    return train, val


def _native_iters(train_path, val_path, parts, shared, train_options, preprocess_threads):
    """``(train, val)`` :class:`NativeRecIter` s (MXNet's ``ImageRecordIter``; None where no path)."""
    train = val = None
    if train_path is not None:
        train = NativeRecIter(train_path, num_parts=parts["train"][0],
                              preprocess_threads=preprocess_threads, **train_options, **shared)
    if val_path is not None:
        val = NativeRecIter(val_path, num_parts=parts["val"][0], part_index=parts["val"][1],
                            preprocess_threads=preprocess_threads, **shared)
    return train, val


def _as_shape(image_shape):
    if isinstance(image_shape, str):
        image_shape = [p for p in image_shape.split(",") if p.strip()]
    try:
        shape = tuple(int(v) for v in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError("image_shape must be (channels, height, width), got %r" % (image_shape,))
    return shape
