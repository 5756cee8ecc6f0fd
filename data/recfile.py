"""Reading and writing image RecordIO files (.rec + .idx + .lst) the way stock MXNet does.

Files are written under temporary names in the destination folder and renamed into place
only when everything succeeded (:class:`SplitWriter`), so a failed run never damages the
files of a previous one.  :func:`read_records` parses the RecordIO framing in Python so a
truncated or corrupt file raises :class:`DataError` naming it instead of aborting MXNet.
"""
import os
import struct
import uuid

import numpy as np

from .errors import DataError

__all__ = ["RECORD_MAGIC", "read_records", "decode_image", "count_records", "SplitWriter",
           "split_paths"]

RECORD_MAGIC = 0xCED7230A  # dmlc RecordIO
_HEADER = struct.Struct("<II")
_MAGIC_BYTES = struct.pack("<I", RECORD_MAGIC)


def split_paths(directory, name, split):
    """``{'rec', 'idx', 'lst'}`` paths of ``<directory>/<name>_<split>.*``."""
    stem = os.path.join(directory, "%s_%s" % (name, split))
    return {ext: stem + "." + ext for ext in ("rec", "idx", "lst")}


def _chunks(path, blob):
    """Yield ``(offset, record bytes)`` for each logical record of a RecordIO ``blob``."""
    pos, size, parts, start = 0, len(blob), [], 0
    while pos < size:
        if pos + 8 > size:
            raise DataError("%s: truncated record header at byte %d; the file is incomplete, "
                            "convert the data again" % (path, pos))
        magic, lrec = _HEADER.unpack_from(blob, pos)
        if magic != RECORD_MAGIC:
            raise DataError("%s: bad RecordIO magic at byte %d; the file is corrupt or not a "
                            ".rec file, convert the data again" % (path, pos))
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        end = pos + 8 + length
        if end > size:
            raise DataError("%s: record at byte %d is truncated (needs %d bytes, %d left); "
                            "convert the data again" % (path, pos, length, size - pos - 8))
        if cflag in (0, 1):
            start, parts = pos, []
        parts.append(blob[pos + 8:end])
        if cflag in (0, 3):  # whole record, or the last part of a split one
            yield start, _MAGIC_BYTES.join(parts) if len(parts) > 1 else parts[0]
        pos = end + ((4 - length % 4) % 4)


def read_records(path):
    """All records of the .rec file ``path`` as a list of ``(offset, bytes)``."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise DataError("cannot read record file %s (%s); check the path or convert the data "
                        "with data/prepare_cifar.py" % (path, exc.strerror or exc)) from None
    if not blob:
        raise DataError("%s: the record file is empty; convert the data again" % path)
    return list(_chunks(path, memoryview(blob)))


def count_records(path):
    """Number of records in ``path`` (reads its .idx if present, else scans the .rec)."""
    idx = os.path.splitext(path)[0] + ".idx"
    if os.path.exists(idx):
        with open(idx) as f:
            return sum(1 for line in f if line.strip())
    return len(read_records(path))


def unpack_record(path, offset, record):
    """``(label, encoded image bytes)`` of one image record (``mx.recordio.IRHeader`` layout)."""
    if len(record) < 24:
        raise DataError("%s: record at byte %d is too short to be an image record" % (path, offset))
    flag, label = struct.unpack_from("<If", record, 0)
    body = record[24:]
    if flag > 0:  # label array of `flag` floats precedes the image
        label = float(np.frombuffer(body[:4], np.float32)[0])
        body = body[4 * flag:]
    return label, body


def decode_image(path, offset, encoded):
    """Decode one record's image to an RGB uint8 (H, W, 3) array; DataError naming the file."""
    import cv2
    img = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError("%s: the image in the record at byte %d cannot be decoded; the file "
                        "is corrupt, convert the data again" % (path, offset))
    return img[:, :, ::-1]


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class SplitWriter:
    """Writes one split (``NAME_train`` or ``NAME_val``) as .rec/.idx/.lst under temporary
    names; :meth:`commit` renames them into place, :meth:`abort` deletes them.

    Records are ``mx.recordio.pack_img`` images (BGR, as OpenCV and ``ImageRecordIter``
    expect) with an ``IRHeader(0, label, index, 0)``; the .lst uses im2rec's
    ``index<TAB>label<TAB>path`` lines.
    """

    def __init__(self, directory, name, split, img_fmt=".png", quality=3):
        import mxnet as mx
        self._mx = mx
        self.paths = split_paths(directory, name, split)
        token = uuid.uuid4().hex[:12]
        self.tmp = {ext: os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(p), token))
                    for ext, p in self.paths.items()}
        self.img_fmt, self.quality = img_fmt, quality
        self._record = mx.recordio.MXIndexedRecordIO(self.tmp["idx"], self.tmp["rec"], "w")
        self._lst = open(self.tmp["lst"], "w")
        self.count = 0

    def add(self, rgb, label, path):
        """Append one RGB uint8 (H, W, 3) image with integer ``label``; ``path`` goes in the .lst."""
        mx = self._mx
        header = mx.recordio.IRHeader(0, float(label), self.count, 0)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        self._record.write_idx(self.count, mx.recordio.pack_img(header, bgr, self.quality, self.img_fmt))
        self._lst.write("%d\t%f\t%s\n" % (self.count, float(label), path))
        self.count += 1

    def close(self):
        """Finish writing (the files keep their temporary names until commit)."""
        self._record.close()
        self._lst.close()

    def commit(self):
        self.close()
        for ext in ("rec", "idx", "lst"):
            os.replace(self.tmp[ext], self.paths[ext])

    def abort(self):
        try:
            self.close()
        finally:
            for tmp in self.tmp.values():
                _remove(tmp)
