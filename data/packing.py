"""What ``data/im2rec.py`` does to each image, in its worker processes: decode (bounded and
checked, :mod:`mxcnn.data.images`), centre-crop, resize the shorter side, encode BGR as
``mx.recordio.pack_img`` does, and measure the pixels for the mean/std.

The work list (:class:`Job` s) comes from :mod:`mxcnn.data.image_lists`.
"""

import collections

import numpy as np

from mxcnn.data.errors import DataError
from mxcnn.data.images import decode_image, read_image

__all__ = [
    "Job",
    "Packed",
    "PackSettings",
    "pack_job",
    "resize_shorter",
    "centre_square",
    "Tally",
]

Job = collections.namedtuple("Job", "key label name shown source")
Job.__doc__ = (
    "One image to pack: ``key`` (its .idx key), integer ``label``, ``name`` (the "
    ".lst path), ``shown`` (how messages call it) and ``source``: a file path, or "
    "the bytes of an archive member."
)

Packed = collections.namedtuple("Packed", "job encoded height width sums squares error")
Packed.__doc__ = (
    "A packed image: ``encoded`` image bytes (None on error), its stored size, "
    "per-channel RGB sums and sums of squares (3 floats: cheaper to send back than arrays), "
    "or ``error`` (one line)."
)


class PackSettings(collections.namedtuple("PackSettings", "resize centre_crop extension quality max_pixels")):
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
        read = decode_image if isinstance(job.source, bytes) else read_image
        bgr = read(job.source, job.shown, settings.max_pixels, min_side=settings.resize, bgr=True)
    except DataError as err:
        return Packed(job, None, 0, 0, None, None, str(err))
    if settings.centre_crop:
        bgr = centre_square(bgr)
    if settings.resize:
        bgr = resize_shorter(bgr, settings.resize)
    mean, std = cv2.meanStdDev(bgr)
    count = float(bgr.shape[0] * bgr.shape[1])
    mean, std = mean.reshape(3)[::-1], std.reshape(3)[::-1]  # RGB order
    ok, encoded = cv2.imencode(settings.extension, bgr, settings.encode_params())
    if not ok:
        return Packed(
            job,
            None,
            0,
            0,
            None,
            None,
            "%s: OpenCV cannot encode the image as %s" % (job.shown, settings.extension),
        )
    return Packed(
        job,
        encoded.tobytes(),
        bgr.shape[0],
        bgr.shape[1],
        tuple((mean * count).tolist()),
        tuple(((std * std + mean * mean) * count).tolist()),
        None,
    )


def centre_square(image: np.ndarray) -> np.ndarray:
    """The centred square of side min(H, W) of an (H, W, C) image (a view), as im2rec crops."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top: top + side, left: left + side]


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
        image = image[
            trim_h // 2: height - (trim_h - trim_h // 2), trim_w // 2: width - (trim_w - trim_w // 2)
        ]
        image = cv2.resize(
            image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA
        )
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------- the packed images


class Tally:
    """Counts, stored sizes and per-channel pixel sums of one split's packed images."""

    def __init__(self):
        self.count, self.pixels = 0, 0.0
        self.sums, self.squares = np.zeros(3), np.zeros(3)
        self.sizes = set()

    def add(self, packed: Packed) -> None:
        self.count += 1
        self.pixels += packed.height * packed.width
        self.sums += packed.sums
        self.squares += packed.squares
        self.sizes.add((packed.height, packed.width))

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel RGB mean and standard deviation (0-255 scale) of the pixels tallied."""
        mean = self.sums / max(self.pixels, 1.0)
        std = np.sqrt(np.maximum(self.squares / max(self.pixels, 1.0) - mean**2, 0.0))
        return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
