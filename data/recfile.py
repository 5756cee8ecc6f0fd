"""Reading and writing image RecordIO files (.rec + .idx + .lst) the way stock MXNet does.

A data set is ``NAME_{train,val}.{rec,idx,lst}`` + ``NAME_stats.json``
(:func:`dataset_names`), written by :class:`SplitWriter` into a new version of a
``common.FileSet`` and switched into place as a unit.  The stats file records each member's
size and :func:`ends_digest`; :func:`check_against_stats` lets readers tell a complete set
from a partial or mixed one.  :func:`read_records` parses the RecordIO framing in Python so
a truncated or corrupt file raises :class:`DataError` naming it instead of aborting MXNet.
"""
import contextlib
import hashlib
import os
import struct

import numpy as np

from mxcnn.data.errors import DataError

__all__ = ["RECORD_MAGIC", "read_records", "decode_image", "count_records", "SplitWriter",
           "split_paths", "dataset_names", "ends_digest", "set_problem", "check_against_stats"]

RECORD_MAGIC = 0xCED7230A  # dmlc RecordIO
_HEADER = struct.Struct("<II")
_MAGIC_BYTES = struct.pack("<I", RECORD_MAGIC)


def split_paths(directory, name, split):
    """``{'rec', 'idx', 'lst'}`` paths of ``<directory>/<name>_<split>.*``."""
    stem = os.path.join(directory, "%s_%s" % (name, split))
    return {ext: stem + "." + ext for ext in ("rec", "idx", "lst")}


def dataset_names(name):
    """Member file names of data set ``name``; the stats file (the manifest) comes last."""
    return ["%s_%s.%s" % (name, split, ext) for split in ("train", "val")
            for ext in ("rec", "idx", "lst")] + ["%s_stats.json" % name]


DIGEST_SPAN = 1 << 16


def ends_digest(path):
    """``"sha256-ends:<hex>"`` of a file's size, first and last 64 KiB.

    Cheap on a data set of any size (a full hash of many GB would cost each training start
    seconds), and enough to tell the files of two conversions apart: their sizes, last
    records and indexes differ.  It is a consistency check, not an integrity check."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(b"%d\0" % size)
        digest.update(f.read(DIGEST_SPAN))
        if size > DIGEST_SPAN:
            f.seek(max(DIGEST_SPAN, size - DIGEST_SPAN))
            digest.update(f.read(DIGEST_SPAN))
    return "sha256-ends:" + digest.hexdigest()


def set_problem(stats, folder, names):
    """Why the files ``names`` in ``folder`` are not the ones ``stats`` describes
    (``file_sizes`` and, when present, ``file_digests``), or None when they are."""
    sizes = stats.get("file_sizes") if isinstance(stats, dict) else None
    if not isinstance(sizes, dict):
        return "the stats file lists no file sizes"
    digests = stats.get("file_digests") if isinstance(stats.get("file_digests"), dict) else {}
    for name in names:
        path = os.path.join(folder, name)
        if name not in sizes:
            return "%s is not listed in the stats file" % name
        if not os.path.isfile(path):
            return "%s is missing" % name
        size = os.path.getsize(path)
        if size != sizes[name]:
            return "%s has %d bytes, the stats file says %s" % (name, size, sizes[name])
        if name in digests and ends_digest(path) != digests[name]:
            return "%s has other contents than the stats file records" % name
    return None


def check_against_stats(stats, paths):
    """DataError when a file of ``paths`` (.rec files; their .idx is checked too) belongs to
    the data set of ``stats`` (same folder as ``stats['_source']``, a name it lists) but is
    not the file that conversion wrote: a partial or mixed set.  Files the stats do not list
    (another test set scored with these stats) are left to the caller's checks."""
    source = stats.get("_source") if isinstance(stats, dict) else None
    sizes = stats.get("file_sizes")
    if not source or not os.path.isfile(source) or not isinstance(sizes, dict):
        return
    folder = os.path.dirname(os.path.abspath(source))
    for path in paths:
        if path is None or os.path.dirname(os.path.abspath(path)) != folder:
            continue
        base = os.path.basename(path)
        names = [n for n in (base, os.path.splitext(base)[0] + ".idx") if n in sizes]
        if base not in sizes:
            continue
        problem = set_problem(stats, folder, names)
        if problem:
            raise DataError("%s does not belong with %s (%s): the data set in %s is partial or "
                            "mixed (an interrupted or older conversion); re-run "
                            "data/prepare_cifar.py with --force" % (path, source, problem, folder))


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


class SplitWriter:
    """Writes one split (``NAME_train`` or ``NAME_val``) as .rec/.idx/.lst in ``directory``
    (a new :class:`common.FileSet` version, so the names are final); :meth:`close` finishes.

    Records are ``mx.recordio.pack_img`` images (BGR, as OpenCV and ``ImageRecordIter``
    expect) with an ``IRHeader(0, label, index, 0)``; the .lst uses im2rec's
    ``index<TAB>label<TAB>path`` lines.  MXNet's write errors (disk full, no permission)
    become DataError naming the file.
    """

    def __init__(self, directory, name, split, img_fmt=".png", quality=3):
        import mxnet as mx
        self._mx = mx
        self.paths = split_paths(directory, name, split)
        self.img_fmt, self.quality = img_fmt, quality
        self._record = self._lst = None
        with self._writing(self.paths["rec"]):
            self._record = mx.recordio.MXIndexedRecordIO(self.paths["idx"], self.paths["rec"], "w")
            self._lst = open(self.paths["lst"], "w")
        self.count = 0

    def _writing(self, path):
        return _write_errors(self._mx, path)

    def add(self, rgb, label, path):
        """Append one RGB uint8 (H, W, 3) image with integer ``label``; ``path`` goes in the .lst."""
        mx = self._mx
        header = mx.recordio.IRHeader(0, float(label), self.count, 0)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with self._writing(self.paths["rec"]):
            self._record.write_idx(self.count, mx.recordio.pack_img(header, bgr, self.quality,
                                                                    self.img_fmt))
            self._lst.write("%d\t%f\t%s\n" % (self.count, float(label), path))
        self.count += 1

    def close(self):
        """Finish writing (flushes and closes the three files)."""
        with self._writing(self.paths["rec"]):
            if self._record is not None:
                self._record.close()
            if self._lst is not None:
                self._lst.close()


@contextlib.contextmanager
def _write_errors(mx, path):
    """MXNetError / OSError while writing ``path`` -> DataError naming it."""
    try:
        yield
    except (mx.base.MXNetError, OSError) as exc:
        raise DataError("cannot write %s (%s); free space or write to another folder"
                        % (path, getattr(exc, "strerror", None) or _mx_reason(exc))) from None


def _mx_reason(exc):
    """The cause in an MXNetError's text: its last line, after dmlc's ``Check failed: ...:``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or ["?"]
    return lines[-1].rsplit(": ", 1)[-1] if "Check failed" in lines[-1] else lines[-1]
