"""Training and validation iterators over image RecordIO files, and a synthetic one.

    train_iter, val_iter = get_rec_iters("cifar10_train.rec", "cifar10_val.rec", 128)

Both are ``mx.io.DataIter`` giving float32 NCHW ``data`` normalised by the train split's
per-channel mean/std and ``softmax_label`` of shape (B,).  Training batches are augmented
the CIFAR way (He et al. 2016, sec. 4.2): 4-pixel zero padding, a random crop back to
H x W, a random horizontal flip.  Every sample appears exactly once per epoch; the last
short batch is completed with samples from the start of the epoch and reports them in
``batch.pad``.  Shuffling and augmentation of epoch ``e`` depend only on
``(seed, e, part_index)``: call ``train_iter.set_epoch(e)`` then ``reset()`` to replay it.

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
from concurrent.futures import ThreadPoolExecutor

import mxnet as mx
import numpy as np

from . import common

from .errors import DataError
from .prefetch import Prefetcher
from .recfile import (check_against_stats, count_records, decode_image, read_records,
                      unpack_record)
from .stats import load_stats

__all__ = ["get_rec_iters", "InMemoryIter", "NativeRecIter", "SyntheticIter", "load_stats",
           "IN_MEMORY_MAX_BYTES", "part_range"]

#: ``backend="auto"`` holds the decoded images in memory up to this many bytes.
IN_MEMORY_MAX_BYTES = 2 * 1024 ** 3

_log = logging.getLogger(__name__)


def part_range(num_records, num_parts, part_index):
    """``(start, stop)`` record range of shard ``part_index`` (ImageRecordIter's split with
    an index file: contiguous chunks of ``ceil(N / num_parts)`` records)."""
    step = -(-num_records // num_parts)
    start = min(part_index * step, num_records)
    return start, min(start + step, num_records)


def _epoch_rng(seed, epoch, part_index):
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(part_index)])


class _EpochIter(mx.io.DataIter):
    """Shared epoch bookkeeping: ``set_epoch(e)`` chooses the next epoch ``reset()`` starts;
    a ``reset()`` without it moves on to the next epoch (or restarts an unread one)."""

    def __init__(self, batch_size, data_shape, data_name, label_name):
        super().__init__(batch_size)
        self.data_shape = tuple(data_shape)
        self._provide_data = [mx.io.DataDesc(data_name, (batch_size,) + self.data_shape, np.float32)]
        self._provide_label = [mx.io.DataDesc(label_name, (batch_size,), np.float32)]
        self.epoch = 0
        self._requested_epoch = None
        self._started = False

    @property
    def provide_data(self):
        return self._provide_data

    @property
    def provide_label(self):
        return self._provide_label

    def set_epoch(self, epoch):
        """Make the next ``reset()`` start epoch ``epoch`` (its shuffle and augmentation)."""
        if int(epoch) < 0:
            raise ValueError("epoch must be >= 0, got %r" % (epoch,))
        self._requested_epoch = int(epoch)

    def reset(self):
        if self._requested_epoch is not None:
            epoch, self._requested_epoch = self._requested_epoch, None
        else:
            epoch = self.epoch + 1 if self._started else self.epoch
        self._begin(epoch)

    def _begin(self, epoch):
        self.epoch = epoch
        self._started = False


class InMemoryIter(_EpochIter):
    """Batches from decoded images held in memory, augmented with vectorised numpy.

    ``images``: uint8 (N, Hs, Ws, 3) RGB; ``labels``: (N,).  Output ``data`` is float32
    (B, 3, H, W) = (pixel - mean) / std per channel, with ``data_shape = (3, H, W)`` no
    larger than the stored images (+ 2 * pad when augmenting).  With ``augment`` each sample
    is zero-padded by ``pad``, randomly cropped to H x W and (``rand_mirror``) flipped with
    probability 0.5; otherwise it is centre-cropped.

    ``prefetch=K`` assembles up to K batches ahead on a background thread (numpy releases
    the GIL in its bulk copies), so a fast GPU does not wait for augmentation; the batches
    are the same, bit for bit, since each epoch's order, crops and flips are drawn in
    ``reset()`` before the thread starts.  ``pin_memory`` copies each batch into page-locked
    memory (``mx.cpu_pinned()``) on that thread, from which the copy to a GPU is a DMA.
    """

    def __init__(self, images, labels, batch_size, data_shape=(3, 32, 32), mean=(0, 0, 0),
                 std=(1, 1, 1), augment=False, pad=4, rand_mirror=True, shuffle=False, seed=0,
                 part_index=0, data_name="data", label_name="softmax_label", prefetch=0,
                 pin_memory=False):
        super().__init__(batch_size, data_shape, data_name, label_name)
        if int(prefetch) < 0:
            raise ValueError("prefetch must be >= 0 batches, got %r" % (prefetch,))
        self.prefetch, self.pin_memory = int(prefetch), bool(pin_memory)
        self._prefetcher = None
        channels, height, width = self.data_shape
        if images.ndim != 4 or images.shape[3] != channels or images.dtype != np.uint8:
            raise DataError("in-memory images must be uint8 (N, H, W, %d), got %s %s"
                            % (channels, images.dtype, images.shape))
        if images.shape[0] == 0:
            raise DataError("no images to iterate over (empty data set or shard)")
        self.images = images
        self.labels = np.asarray(labels, np.float32)
        self.num_samples = images.shape[0]
        self.augment, self.pad, self.rand_mirror = bool(augment), int(pad) if augment else 0, \
            bool(rand_mirror) and bool(augment)
        self.shuffle, self.seed, self.part_index = bool(shuffle), seed, part_index
        stored_h, stored_w = images.shape[1:3]
        self._span_h = stored_h + 2 * self.pad - height  # crop offsets 0..span in padded image
        self._span_w = stored_w + 2 * self.pad - width
        if self._span_h < 0 or self._span_w < 0:
            raise DataError("stored images are %dx%d, smaller than the requested %dx%d"
                            % (stored_h, stored_w, height, width))
        mean = np.asarray(mean, np.float32).reshape(-1)
        std = np.asarray(std, np.float32).reshape(-1)
        self._mean = mean.reshape(-1, 1, 1)
        self._inv_std = (1.0 / std).astype(np.float32).reshape(-1, 1, 1)
        self._begin(0)

    def _begin(self, epoch):
        self.close()  # the thread reads this epoch's draws: stop it before replacing them
        super()._begin(epoch)
        n = self.num_samples
        rng = _epoch_rng(self.seed, epoch, self.part_index)
        self._order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.augment:
            self._dy = rng.integers(0, self._span_h + 1, n)
            self._dx = rng.integers(0, self._span_w + 1, n)
            self._flip = (rng.random(n) < 0.5) if self.rand_mirror else np.zeros(n, bool)
        else:
            self._dy = np.full(n, self._span_h // 2)
            self._dx = np.full(n, self._span_w // 2)
            self._flip = np.zeros(n, bool)
        self._cursor = 0

    def assemble(self, index):
        """Float32 (len(index), C, H, W) batch of samples ``index`` (positions in the data),
        with this epoch's crop offsets and flips.  (Measured fastest on CPU: one strided copy
        per sample for crop + flip, then one vectorised normalisation of the whole batch;
        numpy fancy-index gathers and lookup tables were 3-5x slower.)"""
        _, height, width = self.data_shape
        p = self.pad
        src = self.images[index].transpose(0, 3, 1, 2)                     # (B, C, Hs, Ws)
        if p:
            padded = np.zeros(src.shape[:2] + (src.shape[2] + 2 * p, src.shape[3] + 2 * p),
                              np.uint8)
            padded[:, :, p:p + src.shape[2], p:p + src.shape[3]] = src
            src = padded
        crop = np.empty((len(index),) + self.data_shape, np.uint8)
        for i, (y, x, flip) in enumerate(zip(self._dy[index].tolist(), self._dx[index].tolist(),
                                             self._flip[index].tolist())):
            window = src[i, :, y:y + height, x:x + width]
            crop[i] = window[:, :, ::-1] if flip else window
        out = crop.astype(np.float32)
        out -= self._mean
        out *= self._inv_std
        return out

    def _produce(self, k):
        """``(data, label, pad)`` NDArrays of batch ``k`` of the current epoch."""
        index = self._order[k * self.batch_size:(k + 1) * self.batch_size]
        pad = self.batch_size - len(index)
        if pad:  # complete the batch with the epoch's first samples; reported in `pad`
            index = np.concatenate([index, np.resize(self._order, pad)])
        data, label = self.assemble(index), self.labels[index]
        if self.pin_memory:
            return (mx.nd.array(data, ctx=mx.cpu_pinned(), dtype=np.float32),
                    mx.nd.array(label, ctx=mx.cpu_pinned(), dtype=np.float32), pad)
        # zero-copy hand-over: mx.nd.array() of a fresh 1.5 MB batch took 10x the augmentation
        return (mx.nd.from_numpy(data, zero_copy=True),
                mx.nd.from_numpy(np.ascontiguousarray(label), zero_copy=True), pad)

    def next(self):
        if self._cursor >= self.num_samples:
            raise StopIteration
        k = self._cursor // self.batch_size
        if self.prefetch and self._prefetcher is None:  # started on the epoch's first batch
            batches = -(-self.num_samples // self.batch_size)
            self._prefetcher = Prefetcher(self._produce, batches, self.prefetch)
        self._started = True
        data, label, pad = self._prefetcher.get() if self._prefetcher else self._produce(k)
        self._cursor += self.batch_size - pad
        return mx.io.DataBatch(data=[data], label=[label], pad=pad,
                               provide_data=self.provide_data, provide_label=self.provide_label)

    def close(self):
        """Stop the prefetch thread, if one runs (``reset()`` restarts it as needed)."""
        prefetcher, self._prefetcher = getattr(self, "_prefetcher", None), None
        if prefetcher is not None:
            prefetcher.close()

    def __del__(self):
        self.close()


class NativeRecIter(_EpochIter):
    """``mx.io.ImageRecordIter`` with exact per-epoch determinism and correct ``pad``.

    A new ImageRecordIter is made for each epoch with a seed derived from
    ``(seed, epoch, part_index)``; samples are counted here (ImageRecordIter's own ``pad``
    is unreliable), so the epoch ends after exactly this part's records.
    """

    def __init__(self, path_imgrec, batch_size, data_shape=(3, 32, 32), mean=(0, 0, 0),
                 std=(1, 1, 1), augment=False, pad=4, rand_mirror=True, shuffle=False, seed=0,
                 num_parts=1, part_index=0, preprocess_threads=None, data_name="data",
                 label_name="softmax_label"):
        super().__init__(batch_size, data_shape, data_name, label_name)
        path_imgidx = os.path.splitext(path_imgrec)[0] + ".idx"
        if not os.path.isfile(path_imgidx):
            raise DataError("%s is missing; backend='native' needs the index written beside "
                            "the .rec (convert with data/prepare_cifar.py or im2rec)" % path_imgidx)
        start, stop = part_range(count_records(path_imgrec), num_parts, part_index)
        self.num_samples = stop - start
        if self.num_samples == 0:
            raise DataError("%s: shard %d of %d is empty" % (path_imgrec, part_index, num_parts))
        self.seed, self.part_index = seed, part_index
        mean = [float(v) for v in mean]
        std = [float(v) for v in std]
        self._kwargs = dict(
            path_imgrec=path_imgrec, path_imgidx=path_imgidx, data_shape=self.data_shape,
            batch_size=batch_size, shuffle=bool(shuffle), num_parts=num_parts,
            part_index=part_index, round_batch=False, label_width=1,
            data_name=data_name, label_name=label_name,
            mean_r=mean[0], mean_g=mean[1], mean_b=mean[2],
            std_r=std[0], std_g=std[1], std_b=std[2])
        if augment:
            self._kwargs.update(rand_crop=True, rand_mirror=bool(rand_mirror), pad=int(pad),
                                fill_value=0)
        if preprocess_threads:
            self._kwargs["preprocess_threads"] = int(preprocess_threads)
        self._inner = None
        self._begin(0)

    def _begin(self, epoch):
        super()._begin(epoch)
        seed = int(_epoch_rng(self.seed, epoch, self.part_index).integers(0, 2 ** 31 - 1))
        self._inner = None  # release the previous epoch's threads before starting new ones
        try:
            self._inner = mx.io.ImageRecordIter(seed=seed, seed_aug=seed, **self._kwargs)
        except mx.base.MXNetError as exc:
            raise DataError("%s: ImageRecordIter cannot read it (%s)"
                            % (self._kwargs["path_imgrec"], str(exc).strip().splitlines()[0]))
        self._seen = 0

    def next(self):
        if self._seen >= self.num_samples:
            raise StopIteration
        batch = self._inner.next()
        self._started = True
        real = min(self.batch_size, self.num_samples - self._seen)
        self._seen += real
        batch.pad = self.batch_size - real
        return batch


class SyntheticIter(_EpochIter):
    """``num_batches`` copies of one random batch per epoch: measures training speed without
    any input cost.  ``data`` ~ N(0, 1) float32 (B, C, H, W), labels uniform in
    ``[0, num_classes)``; both made once (seeded) at construction."""

    def __init__(self, batch_size, image_shape=(3, 32, 32), num_classes=10, num_batches=100,
                 seed=0, data_name="data", label_name="softmax_label"):
        super().__init__(batch_size, image_shape, data_name, label_name)
        if int(num_batches) < 1 or int(num_classes) < 1:
            raise ValueError("num_batches and num_classes must be positive")
        rng = np.random.default_rng(seed)
        self.num_batches = int(num_batches)
        self.num_samples = self.num_batches * batch_size
        self._data = mx.nd.array(rng.standard_normal((batch_size,) + self.data_shape,
                                                     dtype=np.float32))
        self._label = mx.nd.array(rng.integers(0, num_classes, batch_size), dtype=np.float32)
        self._count = 0

    def _begin(self, epoch):
        super()._begin(epoch)
        self._count = 0

    def next(self):
        if self._count >= self.num_batches:
            raise StopIteration
        self._count += 1
        self._started = True
        return mx.io.DataBatch(data=[self._data], label=[self._label], pad=0,
                               provide_data=self.provide_data, provide_label=self.provide_label)


# ---------------------------------------------------------------------------- factory

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


def get_rec_iters(data_train, data_val, batch_size, image_shape=(3, 32, 32), stats=None,
                  augment=True, pad=4, rand_mirror=True, shuffle=True, seed=0, num_parts=1,
                  part_index=0, preprocess_threads=None, backend="auto", num_classes=None,
                  prefetch=0, pin_memory=False, shard_val=False):
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
    backend already decodes ahead in its own threads.
    """
    image_shape = _as_shape(image_shape)
    batch_size, num_parts, part_index = _check_arguments(batch_size, num_parts, part_index,
                                                         backend, data_train, data_val)
    train_path = _check_rec(data_train, "training data") if data_train is not None else None
    val_path = _check_rec(data_val, "validation data") if data_val is not None else None
    stats = load_stats(stats, train_path or val_path)
    mean, std, classes = _normalisation(stats, train_path, val_path, num_classes)
    if backend == "auto":
        backend = _choose_backend(stats, train_path, val_path, num_parts, part_index, image_shape)
    shared = dict(batch_size=batch_size, data_shape=image_shape, mean=mean, std=std)
    train_options = dict(augment=augment, pad=pad, rand_mirror=rand_mirror, shuffle=shuffle,
                         seed=seed, part_index=part_index)
    parts = dict(train=(num_parts, part_index), val=(num_parts, part_index) if shard_val else (1, 0))
    if backend == "memory":
        threads = int(preprocess_threads) if preprocess_threads else common.usable_cores()
        train, val = _memory_iters(train_path, val_path, parts, threads, classes, shared,
                                   train_options, dict(prefetch=prefetch, pin_memory=pin_memory))
    else:
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


def _normalisation(stats, train_path, val_path, num_classes):
    """``(mean, std, num_classes)`` from the loaded stats, checked against the .rec files;
    without stats (None) a warning and no normalisation."""
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
        if path is not None and stats.get(key) is not None \
                and count_records(path) != int(stats[key]):
            raise DataError("%s has %d records but %s says %s=%d; the stats belong to "
                            "another conversion" % (path, count_records(path),
                                                    stats["_source"], key, stats[key]))
    classes = int(num_classes) if num_classes is not None else stats_classes
    return stats["mean"], stats["std"], classes


def _choose_backend(stats, train_path, val_path, num_parts, part_index, image_shape):
    """``memory`` when this worker's decoded colour pixels fit IN_MEMORY_MAX_BYTES, else
    ``native``."""
    stored = _stored_shape(stats, train_path or val_path)
    start, stop = part_range(count_records(train_path), num_parts, part_index) \
        if train_path else (0, 0)
    n_val = count_records(val_path) if val_path else 0
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
