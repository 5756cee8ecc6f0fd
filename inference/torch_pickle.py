"""The pickle inside a PyTorch file, read and written without torch.

Reading: :func:`pickle_end` walks the opcodes first (``pickletools.genops`` over a stream
that never hands out more bytes than the file holds), so a declared length beyond the
file, an opcode a state_dict never needs (``INST``, ``OBJ``, ``NEWOBJ``, ``EXT*``) or a
missing ``STOP`` is refused before anything is built.  :func:`restricted_load` then
unpickles with an allow-list: ``collections.OrderedDict``, torch's tensor and parameter
rebuild functions and the typed storage classes, each mapped to an inert stand-in of this
module.  Any other global (``os.system``, ``builtins.eval``, a model class) is refused by
name, so a crafted file runs nothing.  Tensors come back as :class:`TensorRef` (which
storage, offset, shape, strides); the storage bytes are read afterwards by the caller.

Writing: :func:`state_dict_pickle` emits the protocol-2 opcodes ``torch.save`` writes for
an ``OrderedDict`` of contiguous tensors, one storage per tensor (keys "0", "1", ...).
"""
import io
import pickle
import pickletools
import struct
from collections import OrderedDict, namedtuple
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

from mxcnn import common

__all__ = ["TorchFileError", "StorageRef", "TensorRef", "STORAGE_DTYPES", "pickle_end",
           "restricted_load", "state_dict_pickle"]

#: torch storage class name -> numpy dtype of its elements (bfloat16 is widened on read).
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
DTYPE_STORAGES = {np.dtype(v).str: k for k, v in STORAGE_DTYPES.items() if k != "BFloat16Storage"}

#: Opcodes no state_dict pickle needs: they build arbitrary objects or read the extension registry.
_REFUSED_OPCODES = {"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4",
                    "BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}
#: Largest pickle read into memory; a state_dict's pickle holds names and shapes only.
MAX_PICKLE_BYTES = 256 << 20


class TorchFileError(common.UserError):
    """A PyTorch file that cannot be read safely (message names the file and the problem)."""


class StorageRef(namedtuple("StorageRef", "key storage numel view")):
    """A storage the pickle refers to: ``key`` (its record), ``storage`` (class name, e.g.
    ``FloatStorage``), ``numel`` elements; ``view`` = (view key, offset, size) or None."""

    __slots__ = ()


class TensorRef(namedtuple("TensorRef", "storage offset shape stride")):
    """A tensor to rebuild: ``shape``/``stride`` in elements from ``offset`` of ``storage``."""

    __slots__ = ()


class _StorageType(namedtuple("_StorageType", "name")):
    __slots__ = ()


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor(_v2): records what to read, builds nothing."""
    if not isinstance(storage, StorageRef):
        raise TorchFileError("a tensor refers to %r instead of a storage" % (type(storage).__name__,))
    size, stride = tuple(size), tuple(stride)
    numbers = (storage_offset,) + size + stride
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in numbers):
        raise TorchFileError("a tensor has an invalid layout (offset %r, size %r, stride %r)"
                             % (storage_offset, size, stride))
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): the tensor itself."""
    if not isinstance(data, TensorRef):
        raise TorchFileError("a parameter wraps %r instead of a tensor" % (type(data).__name__,))
    return data


_ALLOWED = {("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter}
_ALLOWED.update({(module, name): _StorageType(name) for name in STORAGE_DTYPES
                 for module in ("torch", "torch.cuda")})


class _BoundedReader(io.RawIOBase):
    """A read-only view of ``handle`` that never returns (or allocates) more than the bytes left."""

    def __init__(self, handle, limit):
        super().__init__()
        self.handle, self.left, self.pos = handle, limit, 0

    def readable(self):
        return True

    def tell(self):
        return self.pos

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.handle.read(n)
        self.left -= len(data)
        self.pos += len(data)
        return data

    def readline(self, limit=-1):
        limit = self.left if limit is None or limit < 0 else min(limit, self.left)
        line = self.handle.readline(limit)
        self.left -= len(line)
        self.pos += len(line)
        return line


def pickle_end(handle: BinaryIO, available: int, what: str) -> int:
    """Bytes of the pickle starting at ``handle``'s position (through its ``STOP``).

    Walks every opcode without building objects; TorchFileError when a declared length
    runs past the ``available`` bytes, an opcode is refused, or no ``STOP`` comes."""
    reader = _BoundedReader(handle, min(available, MAX_PICKLE_BYTES))
    try:
        for opcode, _arg, pos in pickletools.genops(reader):
            if opcode.name in _REFUSED_OPCODES:
                raise TorchFileError("%s: the pickle uses opcode %s, which a state_dict never "
                                     "needs; refused (the file is not a plain PyTorch save)"
                                     % (what, opcode.name))
            if opcode.name == "STOP":
                return pos + 1
    except TorchFileError:
        raise
    except (ValueError, EOFError, struct.error, UnicodeDecodeError) as err:
        raise TorchFileError("%s is truncated or corrupt (its pickle does not parse: %s)"
                             % (what, str(err).splitlines()[0][:120])) from None
    raise TorchFileError("%s is truncated (its pickle has no end)" % what)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only containers, numbers, strings and the stand-ins above."""

    def __init__(self, data, what):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.what = what

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise TorchFileError("%s asks to create %s.%s, which a state_dict file does not "
                                 "need; refused (only tensors, OrderedDict and plain containers "
                                 "load; re-save just the state_dict with torch)"
                                 % (self.what, module, name)) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            raise TorchFileError("%s holds a reference %r that is not a torch storage"
                                 % (self.what, str(pid)[:80]))
        view = pid[5] if len(pid) == 6 else None
        if view is not None and not (isinstance(view, tuple) and len(view) == 3
                                     and all(isinstance(v, (int, str)) for v in view)):
            raise TorchFileError("%s holds a storage view %r that does not parse" % (self.what, view))
        key = pid[2].decode("ascii", "replace") if isinstance(pid[2], bytes) else str(pid[2])
        return StorageRef(key, pid[1].name, pid[4], view)


def restricted_load(data: bytes, what: str) -> object:
    """The object pickled in ``data`` (bytes already bounded by :func:`pickle_end`)."""
    try:
        return _RestrictedUnpickler(data, what).load()
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, EOFError,
            IndexError, KeyError, struct.error, RecursionError, MemoryError) as err:
        raise TorchFileError("%s: its pickle is corrupt (%s)"
                             % (what, str(err).splitlines()[0][:120] if str(err) else
                                type(err).__name__)) from None


# ----------------------------------------------------------------------------- writing
class _Opcodes:
    """Protocol-2 pickle opcodes, emitted one call at a time."""

    def __init__(self):
        self.out = io.BytesIO()
        self.out.write(pickle.PROTO + b"\x02")

    def global_(self, module, name):
        self.out.write(pickle.GLOBAL + ("%s\n%s\n" % (module, name)).encode("ascii"))

    def text(self, value):
        raw = value.encode("utf-8")
        self.out.write(pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw)

    def integer(self, value):
        if 0 <= value < 256:
            self.out.write(pickle.BININT1 + struct.pack("<B", value))
        elif -2 ** 31 <= value < 2 ** 31:
            self.out.write(pickle.BININT + struct.pack("<i", value))
        else:
            raw = int(value).to_bytes((int(value).bit_length() + 8) // 8, "little", signed=True)
            self.out.write(pickle.LONG1 + struct.pack("<B", len(raw)) + raw)

    def int_tuple(self, values):
        self.out.write(pickle.MARK)
        for value in values:
            self.integer(int(value))
        self.out.write(pickle.TUPLE)

    def raw(self, opcode):
        self.out.write(opcode)


def _tensor_opcodes(ops, key, array):
    """``_rebuild_tensor_v2(storage key, 0, shape, stride, False, OrderedDict())``."""
    ops.global_("torch._utils", "_rebuild_tensor_v2")
    ops.raw(pickle.MARK)
    ops.raw(pickle.MARK)                       # the persistent id of the storage
    ops.text("storage")
    ops.global_("torch", DTYPE_STORAGES[array.dtype.str])
    ops.text(key)
    ops.text("cpu")
    ops.integer(int(array.size))
    ops.raw(pickle.TUPLE + pickle.BINPERSID)
    ops.integer(0)
    ops.int_tuple(array.shape)
    ops.int_tuple([s // array.itemsize for s in array.strides])
    ops.raw(pickle.NEWFALSE)
    ops.global_("collections", "OrderedDict")
    ops.raw(pickle.EMPTY_TUPLE + pickle.REDUCE)
    ops.raw(pickle.TUPLE + pickle.REDUCE)


def state_dict_pickle(tensors: Sequence[tuple[str, np.ndarray]]) -> bytes:
    """The ``data.pkl`` of an OrderedDict name -> tensor, tensor i in storage record ``str(i)``.

    ``tensors``: ``(name, C-contiguous little-endian numpy array)`` pairs of a dtype torch
    has a storage for."""
    ops = _Opcodes()
    ops.global_("collections", "OrderedDict")
    ops.raw(pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK)
    for index, (name, array) in enumerate(tensors):
        ops.text(name)
        _tensor_opcodes(ops, str(index), array)
    ops.raw(pickle.SETITEMS + pickle.STOP)
    return ops.out.getvalue()
