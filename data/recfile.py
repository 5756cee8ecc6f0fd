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
import mmap
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mxcnn.data.errors import DataError

__all__ = ["RECORD_MAGIC", "read_records", "decode_image", "count_records", "record_offsets",
           "read_index", "check_index", "check_split", "SplitWriter", "image_record", "framed",
           "split_paths",
           "dataset_names", "ends_digest", "set_problem", "check_against_stats"]

RECORD_MAGIC = 0xCED7230A  # dmlc RecordIO
_HEADER = struct.Struct("<II")
_MAGIC_BYTES = struct.pack("<I", RECORD_MAGIC)
_LENGTH_MASK = (1 << 29) - 1


def split_paths(directory: str | os.PathLike[str], name: str, split: str) -> dict[str, str]:
    """``{'rec', 'idx', 'lst'}`` paths of ``<directory>/<name>_<split>.*``."""
    stem = os.path.join(directory, "%s_%s" % (name, split))
    return {ext: stem + "." + ext for ext in ("rec", "idx", "lst")}


def dataset_names(name: str) -> list[str]:
    """Member file names of data set ``name``; the stats file (the manifest) comes last."""
    return ["%s_%s.%s" % (name, split, ext) for split in ("train", "val")
            for ext in ("rec", "idx", "lst")] + ["%s_stats.json" % name]


DIGEST_SPAN = 1 << 16


def ends_digest(path: str | os.PathLike[str]) -> str:
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


def set_problem(stats: dict[str, Any], folder: str | os.PathLike[str], names: Iterable[str]) -> str | None:
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


def check_against_stats(stats: dict[str, Any], paths: Iterable[str | os.PathLike[str] | None]) -> None:
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


def read_records(path: str | os.PathLike[str]) -> list[tuple[int, bytes | memoryview]]:
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


def count_records(path: str | os.PathLike[str]) -> int:
    """Number of records in the .rec file ``path``, from its record headers: its .idx, when
    present, only says where to look (:func:`record_offsets`), it is not trusted."""
    try:
        st = os.stat(path)
        return len(_OFFSETS[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)])
    except (OSError, KeyError):  # not read yet (or unreadable: record_offsets says so)
        pass
    idx = os.path.splitext(path)[0] + ".idx"
    try:
        expected = read_index(idx)[1] if os.path.isfile(idx) else None
    except DataError:  # an unreadable or damaged index: the headers alone tell
        expected = None
    return len(record_offsets(path, expected))


_OFFSETS = {}  # (file identity, size, mtime) -> record offsets: one read per file


def record_offsets(path: str | os.PathLike[str],
                   expected: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """Byte offsets of the records of the .rec file ``path`` (an int64 array).

    Only the 8-byte record headers are read (magic + length word), no image is decoded.
    ``expected`` (the offsets an .idx lists) is confirmed on the headers in one numpy pass:
    every one a whole record, each ending where the next starts, the last at the end of the
    file (a CIFAR-size file: milliseconds).  Without it, or when it does not hold, the
    headers are walked one by one (a CIFAR-size file: a fraction of a second).  The result is
    kept for the file's identity, size and mtime.  DataError naming the file when it is
    unreadable, truncated or not RecordIO; an empty file has no records."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in _OFFSETS:
                if len(_OFFSETS) >= 8:  # a run reads a few files: keep the latest ones
                    del _OFFSETS[next(iter(_OFFSETS))]
                found = _confirmed(f, st.st_size, expected)
                _OFFSETS[key] = found if found is not None else _walk_headers(path, f, st.st_size)
            return _OFFSETS[key].copy()
    except OSError as exc:
        raise DataError("cannot read record file %s (%s); check the path and its permissions"
                        % (path, exc.strerror or exc)) from None


def _confirmed(f, size, expected):
    """``expected`` sorted, when the headers of the open file ``f`` show that these are all of
    its records (unsplit, back to back, to the end); else None."""
    if expected is None or not len(expected) or not size or size % 4:
        return None
    starts = np.unique(np.asarray(expected, np.int64))
    if len(starts) != len(expected) or starts[0] != 0 or starts[-1] + 8 > size or (starts % 4).any():
        return None
    words = np.memmap(f, np.uint32, "r")
    magic, lrec = words[starts // 4], words[starts // 4 + 1].astype(np.int64)
    del words
    length = lrec & _LENGTH_MASK
    ends = starts + 8 + length + (-length) % 4
    whole = (magic == RECORD_MAGIC).all() and not (lrec >> 29).any()
    return starts if whole and (ends[:-1] == starts[1:]).all() and ends[-1] == size else None


def _walk_headers(path, f, size):
    """Offsets of the logical records of the open file ``f`` of ``size`` bytes."""
    if not size:
        return np.zeros(0, np.int64)
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        offsets, pos, unpack = [], 0, _HEADER.unpack_from
        while pos < size:
            if pos + 8 > size:
                raise DataError("%s: truncated record header at byte %d; the file is incomplete, "
                                "convert the data again" % (path, pos))
            magic, lrec = unpack(blob, pos)
            if magic != RECORD_MAGIC:
                raise DataError("%s: bad RecordIO magic at byte %d; the file is corrupt or not a "
                                ".rec file, convert the data again" % (path, pos))
            length = lrec & _LENGTH_MASK
            if pos + 8 + length > size:
                raise DataError("%s: record at byte %d is truncated (needs %d bytes, %d left); "
                                "convert the data again" % (path, pos, length, size - pos - 8))
            if lrec >> 29 in (0, 1):  # a whole record, or the first part of a split one
                offsets.append(pos)
            pos += 8 + length + (-length) % 4
    return np.array(offsets, np.int64)


def read_index(path: str | os.PathLike[str],
               rec_path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, offsets)`` (int64 arrays) of an ``.idx`` file (``MXIndexedRecordIO``'s
    ``key<TAB>offset`` lines); DataError naming the file when it is unreadable or a line is
    not of that form (and the records of ``rec_path``, the file it should index, if given)."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise DataError("cannot read index file %s (%s); check its permissions, or convert the "
                        "data again" % (path, exc.strerror or exc)) from None
    lines = text.splitlines()
    fields = text.split()
    try:
        if len(fields) != 2 * sum(1 for line in lines if line.strip()):
            raise ValueError
        values = np.array(fields, dtype=np.int64).reshape(-1, 2)
    except (ValueError, OverflowError):
        what = " (%s holds %d records)" % (rec_path, len(record_offsets(rec_path))) if rec_path else ""
        raise DataError("%s: line %d is not 'key<TAB>byte offset': the index is damaged%s; convert "
                        "the data again" % (path, _bad_line(lines), what)) from None
    return values[:, 0], values[:, 1]


def _bad_line(lines):
    """The 1-based number of the first line of an .idx that is not two integers."""
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if fields and (len(fields) != 2 or not all(f.lstrip(b"-").isdigit() for f in fields)):
            return number
    return len(lines)


def check_index(rec_path: str | os.PathLike[str]) -> np.ndarray:
    """The record offsets of ``rec_path`` (:func:`record_offsets`), after checking that the
    ``.idx`` beside it, if any, indexes exactly these records; else DataError naming both
    files and their counts: a cut .rec, a cut or garbage .idx, or an .idx of another file."""
    idx = os.path.splitext(rec_path)[0] + ".idx"
    if not os.path.lexists(idx):
        return record_offsets(rec_path)
    keys, listed = read_index(idx, rec_path)
    offsets = record_offsets(rec_path, listed)
    if len(listed) != len(offsets):
        raise DataError("%s lists %d records but %s holds %d: one of them is cut or from another "
                        "conversion; convert the data again" % (idx, len(listed), rec_path,
                                                                len(offsets)))
    stray = np.setdiff1d(listed, offsets)
    if len(stray) or len(np.unique(keys)) != len(keys):
        where = "byte %d, where no record starts" % stray[0] if len(stray) else "a key twice"
        raise DataError("%s does not index %s (%d records): it lists %s; convert the data again"
                        % (idx, rec_path, len(offsets), where))
    return offsets


def check_split(rec_path: str | os.PathLike[str], stats: dict[str, Any] | None = None,
                key: str | None = None) -> int:
    """The number of records of ``rec_path``, after checking that its ``.idx`` indexes them
    (:func:`check_index`) and, with ``stats`` (a stats dict whose ``_source`` is the stats
    file) and ``key`` (``num_train`` / ``num_val``), that the stats count them and record
    these files (:func:`check_against_stats`).  DataError, one line naming the files and the
    counts, at the first disagreement."""
    count = len(check_index(rec_path))
    if stats is None:
        return count
    listed = stats.get(key) if key else None
    if listed is not None and int(listed) != count:
        raise DataError("%s holds %d records but %s says %s=%s: the data set is cut or mixed; "
                        "convert the data again" % (rec_path, count, stats.get("_source"),
                                                    key, listed))
    check_against_stats(stats, [rec_path])
    return count


def unpack_record(path: str | os.PathLike[str], offset: int,
                  record: bytes | memoryview) -> tuple[float, bytes | memoryview]:
    """``(label, encoded image bytes)`` of one image record (``mx.recordio.IRHeader`` layout)."""
    if len(record) < 24:
        raise DataError("%s: record at byte %d is too short to be an image record" % (path, offset))
    flag, label = struct.unpack_from("<If", record, 0)
    body = record[24:]
    if flag > 0:  # label array of `flag` floats precedes the image
        label = float(np.frombuffer(body[:4], np.float32)[0])
        body = body[4 * flag:]
    return label, body


def decode_image(path: str | os.PathLike[str], offset: int, encoded: bytes | memoryview) -> np.ndarray:
    """Decode one record's image to an RGB uint8 (H, W, 3) array; DataError naming the file."""
    import cv2
    img = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError("%s: the image in the record at byte %d cannot be decoded; the file "
                        "is corrupt, convert the data again" % (path, offset))
    return img[:, :, ::-1]


_IR_HEADER = struct.Struct("<IfQQ")  # mx.recordio.IRHeader: flag, label, id, id2


def image_record(label: float, key: int, encoded: bytes) -> bytes:
    """One image record as ``mx.recordio.pack(IRHeader(0, label, key, 0), encoded)`` makes it."""
    return _IR_HEADER.pack(0, label, key, 0) + encoded


def framed(record: bytes) -> bytes:
    """``record`` in dmlc RecordIO framing, byte for byte as MXNet's writer stores it: each
    part is a magic word, a word of ``cflag << 29 | length``, the data; the record is zero
    padded to 4 bytes.  Where the magic word sits at a 4-byte-aligned offset of the data,
    the writer cuts it out and splits the record there (cflag 1 first, 2 middle, 3 last),
    so that a reader resynchronising on magic words never lands inside a record."""
    cuts, pos = [], record.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0 and pos + 4 <= len(record):
            cuts.append(pos)
        pos = record.find(_MAGIC_BYTES, pos + 1)
    parts, begin = [], 0
    for cut in cuts:
        parts += [_HEADER.pack(RECORD_MAGIC, (1 if begin == 0 else 2) << 29 | cut - begin),
                  record[begin:cut]]
        begin = cut + 4
    parts += [_HEADER.pack(RECORD_MAGIC, (3 if begin else 0) << 29 | len(record) - begin),
              record[begin:], bytes(-len(record) % 4)]
    return b"".join(parts)


class SplitWriter:
    """Writes one split (``NAME_train`` or ``NAME_val``) as .rec/.idx/.lst in ``directory``
    (a new :class:`common.FileSet` version, so the names are final); :meth:`close` finishes.

    The files are those ``mx.recordio.MXIndexedRecordIO`` writes (``key<TAB>offset`` .idx
    lines), written here without loading MXNet; records are ``mx.recordio.pack_img`` images
    (BGR, as OpenCV and ``ImageRecordIter`` expect) with an ``IRHeader(0, label, key, 0)``;
    the .lst uses im2rec's ``key<TAB>label<TAB>path`` lines.  Write errors (disk full, no
    permission) become DataError naming the file.
    """

    def __init__(self, directory, name, split, img_fmt=".png", quality=3):
        self.paths = split_paths(directory, name, split)
        self.img_fmt, self.quality = img_fmt, quality
        self._files = []
        with self._writing():
            self._files.append(open(self.paths["rec"], "wb"))
            for kind in ("idx", "lst"):
                self._files.append(open(self.paths[kind], "w", encoding="utf-8"))
        self._rec, self._idx, self._lst = self._files
        self.count = 0

    def _writing(self):
        return _write_errors(self.paths["rec"])

    def add(self, rgb: np.ndarray, label: int, path: str) -> None:
        """Append one RGB uint8 (H, W, 3) image with integer ``label`` under the next key;
        ``path`` goes in the .lst."""
        import cv2
        flag = cv2.IMWRITE_JPEG_QUALITY if self.img_fmt == ".jpg" else cv2.IMWRITE_PNG_COMPRESSION
        ok, encoded = cv2.imencode(self.img_fmt, np.ascontiguousarray(rgb[:, :, ::-1]),
                                   [flag, self.quality])
        if not ok:
            raise DataError("OpenCV cannot encode %s as %s" % (path, self.img_fmt))
        self.add_encoded(encoded.tobytes(), label, self.count, path)

    def add_encoded(self, encoded: bytes, label: float, key: int, path: str) -> None:
        """Append an encoded image with ``label`` under ``key``; ``path`` goes in the .lst."""
        with self._writing():
            self._idx.write("%d\t%d\n" % (key, self._rec.tell()))
            self._rec.write(framed(image_record(float(label), int(key), encoded)))
            self._lst.write("%d\t%f\t%s\n" % (key, float(label), path))
        self.count += 1

    def close(self) -> None:
        """Finish writing (flushes and closes the three files)."""
        with self._writing():
            while self._files:
                self._files.pop(0).close()


@contextlib.contextmanager
def _write_errors(path):
    """OSError while writing ``path`` -> DataError naming it."""
    try:
        yield
    except OSError as exc:
        raise DataError("cannot write %s (%s); free space or write to another folder"
                        % (path, exc.strerror or exc)) from None
