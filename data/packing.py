"""What ``data/im2rec.py`` does to each image, in its worker processes: decode (bounded and
checked, :mod:`mxcnn.data.images`), centre-crop, resize the shorter side, encode BGR as
``mx.recordio.pack_img`` does, and measure the pixels for the mean/std.

The work list comes from a class-per-folder tree (``train/<class>/``, ``test/<class>/`` or
``val/<class>/``; a folder or a .tar/.tar.gz/.tgz/.zip, every archive member checked by
:mod:`mxcnn.data.safety`) or from MXNet im2rec ``.lst`` files (``index<TAB>label<TAB>path``).
"""
import collections
import os
import posixpath
from collections.abc import Iterable

import numpy as np

from mxcnn.data.errors import DataError
from mxcnn.data.images import decode_image, read_image

__all__ = ["Job", "Packed", "PackSettings", "pack_job", "resize_shorter", "centre_square",
           "read_lst", "lst_class_names"]

Job = collections.namedtuple("Job", "key label name shown source")
Job.__doc__ = ("One image to pack: ``key`` (its .idx key), integer ``label``, ``name`` (the "
               ".lst path), ``shown`` (how messages call it) and ``source``: a file path, or "
               "the bytes of an archive member.")

Packed = collections.namedtuple("Packed", "job encoded height width sums squares error")
Packed.__doc__ = ("A packed image: ``encoded`` image bytes (None on error), its stored size, "
                  "per-channel RGB sums and sums of squares (float64 (3,)), or ``error`` (one line).")


class PackSettings(collections.namedtuple("PackSettings",
                                          "resize centre_crop extension quality max_pixels")):
    """``resize``: shorter side in pixels (0: keep the size); ``centre_crop``: square crop of
    the shorter side first; ``extension`` '.jpg' or '.png'; ``quality``: JPEG quality or PNG
    compression level; ``max_pixels``: the decoding limit (width x height)."""

    def encode_params(self) -> list[int]:
        import cv2
        if self.extension == ".jpg":
            return [cv2.IMWRITE_JPEG_QUALITY, int(self.quality)]
        return [cv2.IMWRITE_PNG_COMPRESSION, int(self.quality)]


def init_worker() -> None:
    """Each worker process: one OpenCV thread (the processes are the parallelism)."""
    import cv2
    cv2.setNumThreads(1)


def pack_job(job: Job, settings: PackSettings) -> Packed:
    """Decode, crop, resize and encode one image; a bad image gives ``Packed.error``."""
    import cv2
    try:
        if isinstance(job.source, bytes):
            rgb = decode_image(job.source, job.shown, settings.max_pixels,
                               min_side=settings.resize)
        else:
            rgb = read_image(job.source, job.shown, settings.max_pixels, min_side=settings.resize)
    except DataError as err:
        return Packed(job, None, 0, 0, None, None, str(err))
    if settings.centre_crop:
        rgb = centre_square(rgb)
    if settings.resize:
        rgb = resize_shorter(rgb, settings.resize)
    mean, std = cv2.meanStdDev(rgb)
    count = float(rgb.shape[0] * rgb.shape[1])
    mean, std = mean.reshape(3), std.reshape(3)
    ok, encoded = cv2.imencode(settings.extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               settings.encode_params())
    if not ok:
        return Packed(job, None, 0, 0, None, None, "%s: OpenCV cannot encode the image as %s"
                      % (job.shown, settings.extension))
    return Packed(job, encoded.tobytes(), rgb.shape[0], rgb.shape[1], mean * count,
                  (std * std + mean * mean) * count, None)


def centre_square(image: np.ndarray) -> np.ndarray:
    """The centred square of side min(H, W) of an (H, W, C) image (a view), as im2rec crops."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def resize_shorter(image: np.ndarray, side: int) -> np.ndarray:
    """(H, W, C) uint8 -> (H', W', C) with min(H', W') = ``side``, aspect ratio kept (the longer
    side rounded).  Shrinking averages whole k x k blocks first (OpenCV's area filter at an
    integer factor, the image trimmed evenly by < k pixels), then interpolates the remaining
    factor of < 2 bilinearly: anti-aliased like a full area filter, at a fraction of its cost."""
    import cv2
    height, width = image.shape[:2]
    short = min(height, width)
    if short == side:
        return image
    if height <= width:
        size = (max(1, int(round(width * side / float(height)))), side)
    else:
        size = (side, max(1, int(round(height * side / float(width)))))
    factor = short // side
    if factor >= 2:
        trim_h, trim_w = height % factor, width % factor
        image = image[trim_h // 2:height - (trim_h - trim_h // 2),
                      trim_w // 2:width - (trim_w - trim_w // 2)]
        image = cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor),
                           interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------- .lst files

def read_lst(path: str, root: str | None = None) -> list[Job]:
    """``[Job]`` of an im2rec ``.lst`` (``index<TAB>label<TAB>path``, paths relative to
    ``root``, default the list's folder).  DataError naming the line for a malformed one, a
    label that is no class number, a repeated index or a path escaping ``root``."""
    root = os.path.abspath(root or os.path.dirname(os.path.abspath(path)))
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as err:
        raise DataError("cannot read %s (%s); check the path" % (path, err.strerror or err)) from None
    except UnicodeDecodeError:
        raise DataError("%s is not a text .lst file (index<TAB>label<TAB>path lines)" % path) from None
    jobs, seen = [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, label, name = _lst_fields(path, number, line)
        if key in seen:
            raise DataError("%s:%d: index %d repeats line %d; every image needs its own index"
                            % (path, number, key, seen[key]))
        seen[key] = number
        jobs.append(Job(key, label, name, "%s (%s:%d)" % (name, os.path.basename(path), number),
                        _lst_image_path(path, number, root, name)))
    if not jobs:
        raise DataError("%s lists no images; expected index<TAB>label<TAB>path lines" % path)
    return jobs


def _lst_fields(path, number, line):
    """``(index, label, relative path)`` of one .lst line; DataError naming it otherwise."""
    parts = [p.strip() for p in line.split("\t")]
    where = "%s:%d" % (path, number)
    if len(parts) < 3:
        raise DataError("%s: %r is not index<TAB>label<TAB>path (tab-separated)" % (where, line))
    if len(parts) > 3:
        raise DataError("%s: %d labels on one line; only one class label per image is supported"
                        % (where, len(parts) - 2))
    try:
        key, label = int(parts[0]), float(parts[1])
    except ValueError:
        raise DataError("%s: index %r and label %r must be numbers" % (where, parts[0], parts[1])) \
            from None
    if key < 0 or label < 0 or label != int(label):
        raise DataError("%s: index %d and label %g must be whole numbers >= 0 (classes count from 0)"
                        % (where, key, label))
    return key, int(label), parts[2]


def _lst_image_path(path, number, root, name):
    full = os.path.normpath(os.path.join(root, name))
    if os.path.isabs(name) or os.path.relpath(full, root).split(os.sep)[0] == os.pardir:
        raise DataError("%s:%d: %s is outside the image root %s; list paths relative to --root"
                        % (path, number, name, root))
    return full


def lst_class_names(jobs: Iterable[Job], num_classes: int) -> list[str]:
    """Class names for labels 0..num_classes-1: the folder all of a label's images share
    (im2rec's --recursive lists one folder per class), else the label number."""
    folders = collections.defaultdict(set)
    for job in jobs:
        folders[job.label].add(posixpath.basename(posixpath.dirname(job.name.replace(os.sep, "/"))))
    names = []
    for label in range(num_classes):
        found = folders.get(label, set())
        names.append(found.pop() if len(found) == 1 and "" not in found else str(label))
    return names if len(set(names)) == len(names) else [str(label) for label in range(num_classes)]

