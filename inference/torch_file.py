"""PyTorch ``state_dict`` files (``.pth``/``.pt``/``.th``) read and written without torch.

    tensors = read_state_dict("resnet50.pth")   # OrderedDict name -> numpy array
    write_state_dict("out.pth", tensors)        # torch.load(path, weights_only=True) reads it

Formats read (``torch.save``'s two):

* zip (PyTorch >= 1.6): ``<archive>/data.pkl`` + one record ``<archive>/data/<key>`` per
  storage, stored uncompressed;
* legacy (older torch, or ``_use_new_zipfile_serialization=False``; e.g. the akamaster CIFAR
  ResNets' ``.th``): pickles of the magic number, the protocol version and the system info,
  the object's pickle, the list of storage keys, then each storage as an int64 element count
  followed by its bytes.

Safety (see also :mod:`.torch_pickle`): pickles go through an allow-list unpickler that
builds nothing but containers and tensor descriptions; zip members with absolute or ``..``
names, compressed or duplicate storage records are refused; every size the file declares
(pickle lengths, storage element counts, tensor extents) is checked against the bytes the
file holds before anything is allocated.  Problems raise :class:`TorchFileError` (a
``UserError``) with one line naming the file.

The object in the file may be a state_dict, or a dict wrapping one under ``state_dict``,
``model``, ``model_state_dict``, ``net`` or ``state`` (training checkpoints); the
``module.`` prefix DataParallel adds is removed.
"""
import os
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from mxcnn import common
from mxcnn.inference.torch_pickle import (
    DTYPE_STORAGES,
    STORAGE_DTYPES,
    TensorRef,
    TorchFileError,
    pickle_end,
    restricted_load,
    state_dict_pickle,
)

__all__ = ["TorchFileError", "read_torch_file", "read_state_dict", "write_state_dict",
           "WRAPPER_KEYS"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
#: Data records start at multiples of this (torch's ``.storage_alignment``).
ALIGNMENT = 64
ARCHIVE = "archive"
#: Tensors may overlap in their storages (tied weights), but not by more than this factor.
MAX_EXPANSION = 2


# ----------------------------------------------------------------------------- reading
def read_torch_file(path: str) -> object:
    """The object saved in ``path`` with every tensor as a numpy array."""
    what = "PyTorch file %s" % path
    size = _file_size(path)
    with open(path, "rb") as handle:
        head = handle.read(512)
        handle.seek(0)
        if head.startswith(b"PK\x03\x04"):
            return _read_zip(path, what)
        if head[:1] == b"\x80":
            return _read_legacy(handle, size, what)
        if head[257:262] == b"ustar":
            raise TorchFileError("%s is in the tar format of PyTorch < 0.4; load it with that torch "
                                 "and save it again" % what)
    raise TorchFileError("%s is not a PyTorch file (neither torch.save's zip format nor its "
                         "legacy pickle format)" % what)


def _file_size(path):
    if os.path.isdir(path):
        raise TorchFileError("%s is a folder; give the .pth/.pt/.th file" % path)
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise TorchFileError("cannot read %s (%s)" % (path, err.strerror or err)) from None
    if size == 0:
        raise TorchFileError("PyTorch file %s is empty" % path)
    return size


def _next_pickle(handle, available, what):
    """Unpickle the pickle at ``handle``'s position (bounded, restricted); advance past it."""
    start = handle.tell()
    length = pickle_end(handle, available, what)
    handle.seek(start)
    data = handle.read(length)
    return restricted_load(data, what)


def _read_legacy(handle, size, what):
    """torch.save's legacy format: magic, protocol, sys info, object, keys, storages."""
    for expected in (MAGIC_NUMBER, PROTOCOL_VERSION, None):  # None: the system info
        value = _next_pickle(handle, size - handle.tell(), what)
        if expected is not None and value != expected:
            raise TorchFileError("%s starts with a pickle but not with PyTorch's magic number and "
                                 "protocol version; it is not a PyTorch file" % what)
    obj = _next_pickle(handle, size - handle.tell(), what)
    keys = _next_pickle(handle, size - handle.tell(), what)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchFileError("%s: its list of storages is corrupt" % what)
    wanted = _storages_of(obj, what)
    data = {}
    for key in keys:
        count = handle.read(8)
        if len(count) < 8:
            raise TorchFileError("%s is truncated (storage %s is missing)" % (what, key))
        numel = struct.unpack("<q", count)[0]
        ref = wanted.get(key)
        itemsize = np.dtype(STORAGE_DTYPES[ref.storage] if ref else np.uint8).itemsize
        left = size - handle.tell()
        if numel < 0 or numel * itemsize > left:
            raise TorchFileError("%s is truncated (storage %s declares %d elements, %d bytes "
                                 "remain)" % (what, key, numel, left))
        if ref is None:
            handle.seek(numel * itemsize, 1)
        elif numel != ref.numel:
            raise TorchFileError("%s: storage %s holds %d elements where its tensors need %d; the "
                                 "file is corrupt" % (what, key, numel, ref.numel))
        else:
            data[key] = handle.read(numel * itemsize)
    missing = sorted(set(wanted) - set(data))
    if missing:
        raise TorchFileError("%s is corrupt (storage %s is referenced but not stored)"
                             % (what, missing[0]))
    return _materialise(obj, data, what)


def _safe_member(name):
    parts = name.split("/")
    return not (name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0])


def _read_zip(path, what):
    """torch.save's zip format: ``<archive>/data.pkl`` and ``<archive>/data/<key>`` records."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise TorchFileError("%s is truncated or corrupt (not a complete zip archive: %s)"
                             % (what, err)) from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        unsafe = [n for n in names if not _safe_member(n)]
        if unsafe:
            raise TorchFileError("%s holds a member named %r that points outside the archive; "
                                 "refused" % (what, unsafe[0]))
        if len(set(names)) != len(names):
            raise TorchFileError("%s holds duplicate member names; refused" % what)
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchFileError("%s is a zip archive but not a PyTorch save (no single "
                                 "<archive>/data.pkl)" % what)
        prefix = pickles[0][:-len("data.pkl")]
        obj = _zip_pickle(archive, archive.getinfo(pickles[0]), what)
        byteorder = _zip_record(archive, prefix + "byteorder", 16) or b"little"
        if byteorder not in (b"little", b"big"):
            raise TorchFileError("%s names an unknown byte order %r" % (what, byteorder))
        data = {}
        for key, ref in _storages_of(obj, what).items():
            data[key] = _zip_storage(archive, prefix + "data/" + key, ref, what)
    return _materialise(obj, data, what, big_endian=byteorder == b"big")


def _zip_pickle(archive, info, what):
    import io
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 64 * info.compress_size + 4096:
        raise TorchFileError("%s: data.pkl is compressed beyond any ratio a pickle has; refused" % what)
    with archive.open(info) as member:
        raw = member.read(min(info.file_size, 1 << 30) + 1)
    if len(raw) != info.file_size:
        raise TorchFileError("%s is corrupt (data.pkl is not the size its header says)" % what)
    stream = io.BytesIO(raw)
    length = pickle_end(stream, len(raw), what)
    return restricted_load(raw[:length], what)


def _zip_record(archive, name, limit):
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limit:
        return None
    return archive.read(name).strip()


def _zip_storage(archive, name, ref, what):
    """The bytes of storage record ``name``: stored, and exactly ``ref.numel`` elements long."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise TorchFileError("%s is missing its storage record %s" % (what, name)) from None
    nbytes = ref.numel * np.dtype(STORAGE_DTYPES[ref.storage]).itemsize
    if info.compress_type != zipfile.ZIP_STORED:
        raise TorchFileError("%s: storage record %s is compressed; torch.save never compresses "
                             "them; refused" % (what, name))
    if info.file_size != nbytes:
        raise TorchFileError("%s: storage record %s holds %d bytes where its tensor needs %d; "
                             "the file is corrupt" % (what, name, info.file_size, nbytes))
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise TorchFileError("%s is truncated or corrupt (reading %s: %s)"
                             % (what, name, err)) from None


def _walk(obj, visit):
    """Call ``visit`` on every TensorRef inside nested dicts, lists and tuples; rebuild them."""
    if isinstance(obj, TensorRef):
        return visit(obj)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _walk(value, visit)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_walk(value, visit) for value in obj)
    return obj


def _storages_of(obj, what):
    """Storage key -> its StorageRef for every tensor in ``obj`` (one dtype and size per key)."""
    found = {}

    def visit(ref):
        root = ref.storage
        if root.storage not in STORAGE_DTYPES:
            raise TorchFileError("%s holds a %s, which is not a tensor storage" % (what, root.storage))
        seen = found.setdefault(root.key, root)
        if (seen.storage, seen.numel) != (root.storage, root.numel):
            raise TorchFileError("%s declares storage %s twice with different types or sizes"
                                 % (what, root.key))
        return ref
    _walk(obj, visit)
    return found


def _materialise(obj, data, what, big_endian=False):
    """``obj`` with each TensorRef replaced by a numpy array copied out of its storage."""
    budget = [MAX_EXPANSION * sum(len(v) for v in data.values()) + (1 << 20)]

    def visit(ref):
        root = ref.storage
        dtype = np.dtype(STORAGE_DTYPES[root.storage])
        buffer = np.frombuffer(data[root.key], dtype.newbyteorder(">" if big_endian else "<"))
        offset = ref.offset
        if root.view is not None:
            _key, view_offset, view_size = root.view
            if not (isinstance(view_offset, int) and isinstance(view_size, int)
                    and 0 <= view_offset and view_offset + view_size <= root.numel):
                raise TorchFileError("%s: a storage view lies outside its storage" % what)
            buffer = buffer[view_offset:view_offset + view_size]
        return _tensor(buffer, offset, ref, root.storage, budget, what)
    return _walk(obj, visit)


def _tensor(buffer, offset, ref, storage, budget, what):
    numel = int(np.prod(ref.shape, dtype=np.int64)) if ref.shape else 1
    if numel and offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) >= len(buffer):
        raise TorchFileError("%s: a tensor of shape %s reaches beyond its storage of %d elements"
                             % (what, "x".join(map(str, ref.shape)) or "()", len(buffer)))
    budget[0] -= numel * buffer.itemsize
    if budget[0] < 0:
        raise TorchFileError("%s: its tensors overlap their storages far beyond any state_dict's "
                             "tied weights; refused" % what)
    if not numel:
        array = np.zeros(ref.shape, buffer.dtype)
    else:  # a read-only view of the file's bytes; copied only when strided or byte-swapped
        array = np.lib.stride_tricks.as_strided(
            buffer[offset:], ref.shape, [s * buffer.itemsize for s in ref.stride], writeable=False)
    if not array.flags.c_contiguous or not array.dtype.isnative:
        array = np.array(array, dtype=buffer.dtype.newbyteorder("="), order="C")
    if storage == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def read_state_dict(path: str) -> "OrderedDict[str, np.ndarray]":
    """The tensors of a state_dict file: OrderedDict name -> numpy array, in file order.

    Unwraps ``{'state_dict': ...}`` (and the other :data:`WRAPPER_KEYS`) and drops the
    ``module.`` prefix of DataParallel saves; non-tensor entries (``_metadata``) are left out.
    The arrays are read-only views of the file's bytes where the layout allows (copy to modify)."""
    obj = read_torch_file(path)
    tensors = _tensor_dict(obj)
    if tensors is None and isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            tensors = _tensor_dict(obj.get(key))
            if tensors is not None:
                break
    if tensors is None:
        keys = ", ".join(sorted(str(k) for k in obj)[:8]) if isinstance(obj, dict) else ""
        raise TorchFileError("PyTorch file %s holds no state_dict (%s%s); save "
                             "model.state_dict() with torch" % (path, type(obj).__name__,
                                                                " with keys " + keys if keys else ""))
    if tensors and all(name.startswith("module.") for name in tensors):
        tensors = OrderedDict((name[len("module."):], value) for name, value in tensors.items())
    return tensors


def _tensor_dict(obj):
    if not isinstance(obj, dict) or not obj:
        return None
    tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, np.ndarray))
    if not tensors or not all(isinstance(k, str) for k in tensors):
        return None
    return tensors if len(tensors) == len(obj) or set(obj) - set(tensors) <= {"_metadata"} else None


# ----------------------------------------------------------------------------- writing
def write_state_dict(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``tensors`` (name -> numpy array) as ``torch.save(OrderedDict)`` does, in the zip
    format, atomically.  ``torch.load(path, weights_only=True)`` returns the same OrderedDict."""
    items = []
    for name, value in tensors.items():
        array = np.asarray(value, order="C")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        if array.dtype.str not in DTYPE_STORAGES:
            raise common.UserError("tensor %s has dtype %s, which torch has no storage for"
                                   % (name, array.dtype))
        items.append((str(name), array))
    common.atomic_write(path, lambda tmp: _write_zip(tmp, items))


def _write_zip(path, items):
    records = [("data.pkl", state_dict_pickle(items)), (".format_version", b"1"),
               (".storage_alignment", str(ALIGNMENT).encode()), ("byteorder", b"little")]
    records += [("data/%d" % i, array) for i, (_, array) in enumerate(items)]
    records.append(("version", b"3\n"))
    with open(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in records:
            _write_record(archive, handle, "%s/%s" % (ARCHIVE, name), payload)


def _write_record(archive, handle, name, payload):
    """One stored member whose data starts at a multiple of :data:`ALIGNMENT` (as torch's)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    view = memoryview(payload.reshape(-1).view(np.uint8) if isinstance(payload, np.ndarray)
                      else payload)
    info.file_size = view.nbytes
    header = 30 + len(name.encode("utf-8"))
    pad = -(handle.tell() + header) % ALIGNMENT
    if 0 < pad < 4:
        pad += ALIGNMENT
    if pad:
        info.extra = struct.pack("<HH", 0x4246, pad - 4) + b"Z" * (pad - 4)
    with archive.open(info, "w") as member:
        for start in range(0, view.nbytes, 1 << 24):
            member.write(view[start:start + (1 << 24)])
