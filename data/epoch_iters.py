"""The epoch-exact iterator classes behind :func:`data.iterators.get_rec_iters`.

* :class:`InMemoryIter`: decoded uint8 images in memory, augmented with vectorised numpy;
* :class:`NativeRecIter`: ``mx.io.ImageRecordIter``, re-seeded per epoch, with a true ``pad``;
* :class:`SyntheticIter`: one random batch repeated, for speed measurements.

All share :class:`_EpochIter`'s contract: ``set_epoch(e)`` then ``reset()`` replays epoch
``e``, whose shuffle and augmentation depend only on ``(seed, e, part_index)``.
"""
import math
import os

import mxnet as mx
import numpy as np

from mxcnn.data.errors import DataError
from mxcnn.data.prefetch import Prefetcher
from mxcnn.data.recfile import count_records

__all__ = ["InMemoryIter", "NativeRecIter", "SyntheticIter", "part_range", "PAD_MODES",
           "AUGMENTATIONS", "RANDOM_AREA", "RANDOM_ASPECT", "EVAL_CROP_FRACTION", "eval_resize",
           "imagenet_options"]

#: How a training crop's padding is filled: black (zeros) or the image reflected at its edge.
PAD_MODES = ("zero", "reflect")
#: How training images are augmented: He et al.'s CIFAR pad + crop + flip, or the ImageNet
#: random-resized crop + flip (Szegedy et al. 2015; torchvision's and GluonCV's defaults).
AUGMENTATIONS = ("cifar", "imagenet")
#: The random-resized crop's ranges: area as a fraction of the image, aspect ratio (w / h).
RANDOM_AREA = (0.08, 1.0)
RANDOM_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
#: ImageNet evaluation: the shorter side resized to crop side / 0.875 (256 for 224), then the
#: centre crop.
EVAL_CROP_FRACTION = 0.875


def eval_resize(data_shape: tuple) -> int:
    """The shorter side ImageNet-style evaluation resizes to for a (C, H, W) crop:
    ceil(max(H, W) / 0.875), as GluonCV (256 for 224, 74 for 64)."""
    return int(math.ceil(max(int(data_shape[1]), int(data_shape[2])) / EVAL_CROP_FRACTION - 1e-9))


def imagenet_options(data_shape: tuple, train: bool, rand_mirror: bool = True,
                     color_jitter: float = 0.0) -> dict:
    """``mx.io.ImageRecordIter`` options of ImageNet-style augmentation.  Training: a crop of
    a random area fraction (:data:`RANDOM_AREA`) and aspect ratio (:data:`RANDOM_ASPECT`, drawn
    uniformly and turned to its inverse half of the time) resized to the crop shape, a random
    flip, and with ``color_jitter`` F brightness, contrast and saturation factors in
    [1 - F, 1 + F].  Evaluation: the shorter side resized to :func:`eval_resize`, the centre
    crop.  Bilinear interpolation throughout."""
    if not train:
        return {"resize": eval_resize(data_shape), "inter_method": 1}
    options = dict(random_resized_crop=True, min_random_area=RANDOM_AREA[0],
                   max_random_area=RANDOM_AREA[1], min_aspect_ratio=RANDOM_ASPECT[0],
                   max_aspect_ratio=RANDOM_ASPECT[1], rand_mirror=bool(rand_mirror),
                   inter_method=1)
    if color_jitter:
        options.update(brightness=float(color_jitter), contrast=float(color_jitter),
                       saturation=float(color_jitter))
    return options


def part_range(num_records: int, num_parts: int, part_index: int) -> tuple[int, int]:
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
    is padded by ``pad`` (``pad_mode`` ``'zero'``, or ``'reflect'`` as airbench does),
    randomly cropped to H x W and (``rand_mirror=True``) flipped with probability 0.5;
    otherwise it is centre-cropped.  ``rand_mirror='alternate'`` is airbench94's alternating
    flip (Jordan 2024, arXiv:2404.00498): each image's flip is drawn once, and the image is
    mirrored that way in even epochs and the other way in odd ones, so consecutive epochs see
    both.

    ``prefetch=K`` assembles up to K batches ahead on a background thread (numpy releases
    the GIL in its bulk copies), so a fast GPU does not wait for augmentation; the batches
    are the same, bit for bit, since each epoch's order, crops and flips are drawn in
    ``reset()`` before the thread starts.  ``pin_memory`` copies each batch into page-locked
    memory (``mx.cpu_pinned()``) on that thread, from which the copy to a GPU is a DMA.
    """

    def __init__(self, images, labels, batch_size, data_shape=(3, 32, 32), mean=(0, 0, 0),
                 std=(1, 1, 1), augment=False, pad=4, rand_mirror=True, shuffle=False, seed=0,
                 part_index=0, data_name="data", label_name="softmax_label", prefetch=0,
                 pin_memory=False, pad_mode="zero"):
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
        if pad_mode not in PAD_MODES:
            raise ValueError("pad_mode must be one of %s, got %r" % (PAD_MODES, pad_mode))
        self.augment, self.pad, self.pad_mode = bool(augment), int(pad) if augment else 0, pad_mode
        self.rand_mirror = (rand_mirror if rand_mirror == "alternate" else bool(rand_mirror)) \
            if augment else False
        self.shuffle, self.seed, self.part_index = bool(shuffle), seed, part_index
        self._flip0 = None
        if self.rand_mirror == "alternate":  # its first-epoch flips, from a stream of their own
            stream = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(part_index), 0xF1])
            self._flip0 = stream.random(images.shape[0]) < 0.5
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
            if self._flip0 is not None:
                self._flip = self._flip0 ^ bool(epoch % 2)
        else:
            self._dy = np.full(n, self._span_h // 2)
            self._dx = np.full(n, self._span_w // 2)
            self._flip = np.zeros(n, bool)
        self._cursor = 0

    def assemble(self, index: np.ndarray) -> np.ndarray:
        """Float32 (len(index), C, H, W) batch of samples ``index`` (positions in the data),
        with this epoch's crop offsets and flips.  (Measured fastest on CPU: one strided copy
        per sample for crop + flip, then one vectorised normalisation of the whole batch;
        numpy fancy-index gathers and lookup tables were 3-5x slower.)"""
        _, height, width = self.data_shape
        p = self.pad
        src = self.images[index].transpose(0, 3, 1, 2)                     # (B, C, Hs, Ws)
        if p and self.pad_mode == "reflect":
            src = np.pad(src, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
        elif p:
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

    def next(self) -> mx.io.DataBatch:
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

    def close(self) -> None:
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
    is unreliable), so the epoch ends after exactly this part's records.  Augmentation
    ``cifar``: pad + random crop + flip (``augment``), else the centre crop; ``imagenet``:
    :func:`imagenet_options` for training (``augment``) or evaluation.
    """

    def __init__(self, path_imgrec, batch_size, data_shape=(3, 32, 32), mean=(0, 0, 0),
                 std=(1, 1, 1), augment=False, pad=4, rand_mirror=True, shuffle=False, seed=0,
                 num_parts=1, part_index=0, preprocess_threads=None, data_name="data",
                 label_name="softmax_label", pad_mode="zero", augmentation="cifar",
                 color_jitter=0.0):
        super().__init__(batch_size, data_shape, data_name, label_name)
        if augmentation not in AUGMENTATIONS:
            raise ValueError("augmentation must be one of %s, got %r" % (AUGMENTATIONS, augmentation))
        if augment and (rand_mirror == "alternate" or pad_mode != "zero"):
            raise DataError("ImageRecordIter (backend='native') has neither the alternating flip "
                            "nor reflect padding; use backend='memory' (data sets that fit in "
                            "memory) or random flips and zero padding")
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
        if augmentation == "imagenet":
            self._kwargs.update(imagenet_options(self.data_shape, augment, rand_mirror,
                                                 color_jitter))
        elif augment:
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

    def next(self) -> mx.io.DataBatch:
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

    def next(self) -> mx.io.DataBatch:
        if self._count >= self.num_batches:
            raise StopIteration
        self._count += 1
        self._started = True
        return mx.io.DataBatch(data=[self._data], label=[self._label], pad=0,
                               provide_data=self.provide_data, provide_label=self.provide_label)
