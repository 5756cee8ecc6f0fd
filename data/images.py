"""Reading a user's image file or bytes: the one place the project decodes them, bounded and checked.

    from mxcnn.data.images import read_image
    rgb = read_image("cat.jpg")                      # uint8 (H, W, 3) RGB
    grey = read_image(blob, name="x.png", grey=True)  # uint8 (H, W, 1)

Before any pixel is decoded, the size the file declares in its header (Pillow's ``Image.open``
reads only the header) is checked against ``max_pixels``: a small file that declares a huge
image (a decompression bomb) is refused in one line naming the file and its size, at the
memory cost of the header.  Then the file is checked for completeness and decoded:

* a JPEG must reach its end-of-image marker and a PNG its IEND chunk, and Pillow raises for
  pixel data that ends early (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off): a truncated
  file is refused, never filled with grey as OpenCV's ``imdecode`` does;
* only the formats a class-per-folder tree may hold are opened (:data:`FORMATS`), so no
  Pillow plugin that runs an external program (EPS runs Ghostscript) is ever reached;
* CMYK, greyscale, palette, 16-bit and alpha images come back as RGB (alpha dropped, as
  OpenCV's ``IMREAD_COLOR`` does), EXIF orientation applied (as OpenCV applies it).

Once checked, a greyscale or RGB JPEG is decoded by OpenCV's libjpeg-turbo, which gives
the very pixels Pillow's does at twice its speed (Pillow decodes to 4 bytes a pixel and copies
once more into the array); every other image is decoded by Pillow.

Every problem is a :class:`~mxcnn.data.errors.DataError` (a ``common.UserError``) whose
message names the file and the fix.
"""
import contextlib
import io
import math
import os
import re
import struct
import threading
import warnings
import zlib

import numpy as np

from mxcnn.data.errors import DataError

__all__ = ["MAX_IMAGE_PIXELS", "FORMATS", "read_image", "decode_image", "check_max_pixels",
           "truncation_problem"]

#: The default limit on width x height: Pillow's own ``MAX_IMAGE_PIXELS`` (a 256 MiB RGB
#: decode, 2^30 / 4 / 3 pixels).  It takes every camera photo up to ~89 MP (a 4K frame is
#: 8.3 MP), and a refused image costs its header only; ``--max-image-pixels`` raises it.
MAX_IMAGE_PIXELS = 89478485

#: Pillow formats opened (the extensions of data.sources.IMAGE_EXTENSIONS); "JPEG" also
#: opens the multi-picture JPEGs cameras write (format "MPO").
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000", "GIF")

#: a JPEG marker: 0xFF (fill bytes allowed) + a byte that is not stuffing (00), a restart
#: marker (D0-D7), TEM (01) or fill
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\x01\xd0-\xd7\xff])")
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: markers without a length field (SOI; EOI is handled apart)
_JPEG_STANDALONE = {0xD8}
_PIL_SETTINGS_LOCK = threading.Lock()
_EXIF_ORIENTATION = 0x0112

#: OpenCV's IMREAD_REDUCED_* bits per libjpeg scale denominator
_OPENCV_REDUCED = {1: 0, 2: 16, 4: 32, 8: 64}
#: JPEG modes OpenCV decodes to Pillow's pixels (its CMYK conversion rounds differently)
_OPENCV_MODES = ("L", "RGB")
_OPENCV_MAX_PIXELS = 1 << 30  # OpenCV's CV_IO_MAX_IMAGE_PIXELS

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  IndexError, MemoryError)


def check_max_pixels(max_pixels: int, flag: str = "--max-image-pixels") -> int:
    """``max_pixels`` as a positive int; DataError naming ``flag`` otherwise."""
    try:
        value = int(max_pixels)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or value != max_pixels:
        raise DataError("%s must be a positive number of pixels (width x height), got %r"
                        % (flag, max_pixels))
    return value


def read_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview, name: str | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS, grey: bool = False,
               min_side: int | None = None, bgr: bool = False) -> np.ndarray:
    """Decode an image file path (or its bytes) to uint8 (H, W, 3) RGB (BGR with ``bgr``), or
    (H, W, 1) with ``grey``.  ``name`` is what messages call it (default: the path).
    DataError for a missing, unreadable, oversized, truncated or undecodable file.
    ``min_side``: see :func:`decode_image`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), name or "image", max_pixels, grey, min_side, bgr)
    path = os.fspath(source)
    name = name or path
    if os.path.isdir(path):
        raise DataError("image %s is a folder; give image files (e.g. %s/*.png)"
                        % (name, name.rstrip("/")))
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except FileNotFoundError:
        raise DataError("image %s does not exist" % name) from None
    except OSError as err:
        raise DataError("cannot read image %s (%s); check that you may read it"
                        % (name, err.strerror or err)) from None
    return decode_image(blob, name, max_pixels, grey, min_side, bgr)


def decode_image(blob: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS,
                 grey: bool = False, min_side: int | None = None, bgr: bool = False) -> np.ndarray:
    """:func:`read_image` on the bytes of a file; ``name`` labels it in messages.

    ``min_side``: the caller shrinks the image to this shorter side anyway, so a JPEG may be
    decoded at the smallest of libjpeg's 1/2, 1/4, 1/8 scales that keeps its shorter side
    >= ``min_side`` (DCT-domain scaling, Pillow's ``draft``): several times faster for a
    photo much larger than the size wanted.  Other formats decode at full size."""
    max_pixels = check_max_pixels(max_pixels)
    if not blob:
        raise DataError("%s: the image file is empty; replace or remove it" % name)
    with _pil_settings():
        image = _open_checked(blob, name, max_pixels)
        opencv = _opencv_decodes(image)
        if not opencv:
            array = _decode_pillow(image, name, grey, min_side)
    if opencv:
        return _decode_jpeg_opencv(blob, image.size, name, grey, min_side, bgr)
    return np.ascontiguousarray(array[:, :, ::-1]) if bgr and not grey else array


def _open_checked(blob, name, max_pixels):
    """The Pillow image of ``blob``, its header read: DataError for an unknown format, a
    size over ``max_pixels`` or a truncated JPEG/PNG."""
    from PIL import Image, UnidentifiedImageError
    try:
        image = Image.open(io.BytesIO(blob), formats=FORMATS)
    except UnidentifiedImageError:
        raise DataError("%s: cannot decode the image (corrupt, or not a %s file); replace "
                        "or remove it" % (name, "/".join(FORMATS))) from None
    except _DECODE_ERRORS as err:
        raise _corrupt(name, err) from None
    _check_pixels(image.size, name, len(blob), max_pixels)
    problem = truncation_problem(blob, image.format)
    if problem:
        raise DataError("%s: cannot decode the image: it is truncated (%s); replace or "
                        "remove the file" % (name, problem))
    return image


def _decode_pillow(image, name, grey, min_side):
    """The opened ``image`` decoded by Pillow: uint8 (H, W, 3) RGB or (H, W, 1)."""
    if image.format in ("JPEG", "MPO") and (grey or min_side):
        # grey: libjpeg's own luma, as OpenCV's IMREAD_GRAYSCALE
        image.draft("L" if grey else image.mode, _draft_size(image.size, min_side))
    try:
        image.load()
        return _to_array(image, grey)
    except _DECODE_ERRORS as err:
        raise _corrupt(name, err) from None


def _opencv_decodes(image):
    """Whether the opened ``image`` is a JPEG OpenCV decodes exactly as Pillow would: grey
    or RGB (YCbCr), within OpenCV's own pixel limit."""
    width, height = image.size
    return (image.format in ("JPEG", "MPO") and image.mode in _OPENCV_MODES
            and width * height <= _OPENCV_MAX_PIXELS)


def _decode_jpeg_opencv(blob, size, name, grey, min_side, bgr):
    """The checked JPEG ``blob`` decoded by OpenCV (EXIF orientation applied), at the DCT
    scale Pillow's ``draft`` would take for ``min_side``: (H, W, 3) RGB/BGR or (H, W, 1)."""
    import cv2
    scale = _dct_scale(size, min_side)
    flags = (cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR) | _OPENCV_REDUCED[scale]
    array = cv2.imdecode(np.frombuffer(blob, np.uint8), flags)
    if array is None:
        # OpenCV's memory source stops at the end of the data (libjpeg suspends), so a
        # file cut after an FFD9 inside a segment between scans lands here too
        raise DataError("%s: cannot decode the image: the JPEG data is corrupt or truncated; "
                        "replace or remove the file" % name)
    if grey:
        return array[:, :, None]
    return array if bgr else cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def _dct_scale(size, min_side):
    """libjpeg's scale denominator (1, 2, 4 or 8) for ``min_side``, chosen as Pillow's JPEG
    ``draft`` chooses it."""
    wanted = _draft_size(size, min_side)
    ratio = min(size[0] // wanted[0], size[1] // wanted[1])
    return next(scale for scale in (8, 4, 2, 1) if ratio >= scale)


def _draft_size(size, min_side):
    """The size Pillow's JPEG ``draft`` may shrink ``size`` towards: shorter side ``min_side``."""
    width, height = size
    if not min_side or min(width, height) <= min_side:
        return size
    scale = float(min_side) / min(width, height)
    return max(1, int(math.ceil(width * scale))), max(1, int(math.ceil(height * scale)))


@contextlib.contextmanager
def _pil_settings():
    """Pillow's process-wide switches as this module needs them, for the block: no bomb
    check of its own (ours names the file and honours ``max_pixels`` above Pillow's 2x
    hard limit), truncated images raise.  Restored afterwards; one block at a time."""
    from PIL import Image, ImageFile
    with _PIL_SETTINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _check_pixels(size, name, file_bytes, max_pixels):
    width, height = size
    if width * height > max_pixels:
        raise DataError("%s (%s on disk) declares %dx%d = %s pixels, over the limit of %s; "
                        "shrink it, or pass --max-image-pixels %d if you trust the file"
                        % (name, _human_bytes(file_bytes), width, height,
                           format(width * height, ","), format(max_pixels, ","),
                           width * height))


def _human_bytes(count):
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= scale:
            return "%.1f %s" % (count / scale, unit)
    return "%d bytes" % count


def _corrupt(name, err):
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError("%s: cannot decode the image (%s); the file is truncated or corrupt, "
                     "replace or remove it" % (name, detail))


def truncation_problem(blob: bytes, fmt: str) -> str | None:
    """Why the JPEG/PNG in ``blob`` is cut short (a phrase), or None: a JPEG must reach its
    end-of-image marker, a PNG its IEND chunk.  Other formats: None (Pillow checks them)."""
    if fmt in ("JPEG", "MPO"):
        if blob.rstrip(b"\x00").endswith(b"\xff\xd9"):
            # Ends with EOI (never inside entropy-coded data): whole, or cut after an FFD9
            # inside a header or comment segment, which Pillow refuses itself (data ending
            # early raises): no need to walk the segments (30% of packing a photo).
            return None
        return None if _jpeg_reaches_eoi(blob) else "no end-of-image marker"
    if fmt == "PNG":
        return None if _PNG_IEND in blob else "no IEND chunk"
    return None


def _jpeg_reaches_eoi(blob):
    """True when the marker segments from SOI on reach an EOI marker (FFD9): segments with a
    length are skipped whole (an EXIF thumbnail's EOI does not count), entropy-coded data is
    scanned for its next marker."""
    pos = 2  # after SOI
    while True:
        match = _JPEG_MARKER.search(blob, pos)
        if match is None:
            return False
        marker, pos = match.group(1)[0], match.end()
        if marker == 0xD9:
            return True
        if marker in _JPEG_STANDALONE:
            continue
        if pos + 2 > len(blob):
            return False
        length = int.from_bytes(blob[pos:pos + 2], "big")
        if length < 2:
            return False
        pos += length


def _to_array(image, grey):
    """uint8 (H, W, 3) RGB or (H, W, 1) grey of a loaded Pillow image, EXIF orientation applied."""
    from PIL import Image, ImageOps
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # exif_transpose copies otherwise
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # 16/32-bit integer grey: keep the high byte, as OpenCV does
        high = np.clip(np.asarray(image, np.int64) >> 8, 0, 255).astype(np.uint8)
        image = Image.fromarray(high)
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    target = "L" if grey else "RGB"
    if image.mode != target:  # CMYK, YCbCr, P, PA, LA, RGBA, 1, L -> RGB; any -> L
        image = image.convert(target)
    array = np.asarray(image, np.uint8)
    return np.ascontiguousarray(array[:, :, None] if grey else array)
