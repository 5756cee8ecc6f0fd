"""Loading untrusted downloads safely: pickles that can only rebuild plain data, and
archive listings that refuse members escaping the archive's folder, links and devices.

Archives are read member by member into memory (never extracted to disk), and only after
every member passed the checks.

The CIFAR "python version" archives are pickles.  ``pickle.load`` on a crafted file can
run any code, so :func:`load_pickle` uses an unpickler whose ``find_class`` resolves only
the few numpy globals needed to rebuild arrays (object arrays excluded); everything else
(``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused.
"""
from __future__ import annotations

import io
import os
import pickle
import stat
from typing import TYPE_CHECKING, Any

import numpy as np

from mxcnn.data.errors import DataError

if TYPE_CHECKING:
    import tarfile
    import zipfile

__all__ = ["load_pickle", "safe_member_name", "tar_members", "zip_members"]


def _plain_dtype(*args, **kwargs):
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dtype


def _latin1_encode(text, encoding="latin1", *rest):
    # Python 3 pickles of bytes at protocol 2 call _codecs.encode(str, 'latin1').
    if str(encoding).lower().replace("-", "") != "latin1" or rest:
        raise pickle.UnpicklingError("_codecs.encode with %r is not allowed" % (encoding,))
    return text.encode("latin1")


def _frombuffer(buf, dtype, shape, order):
    # numpy's pickle protocol 5 path (numpy.core.numeric._frombuffer), object dtypes refused
    return np.frombuffer(buf, dtype=_plain_dtype(dtype)).reshape(shape, order=order)


def _allowed_globals():
    from numpy.core import multiarray
    allowed = {("numpy", "ndarray"): np.ndarray,
               ("numpy", "dtype"): _plain_dtype,
               ("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x pickles
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _frombuffer
    return allowed


class _PlainDataUnpickler(pickle.Unpickler):
    _ALLOWED = None

    def find_class(self, module, name):
        if _PlainDataUnpickler._ALLOWED is None:
            _PlainDataUnpickler._ALLOWED = _allowed_globals()
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError("global %s.%s is not allowed" % (module, name)) from None


def load_pickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (bytes) that may only hold dicts, lists, tuples, strings, bytes,
    numbers and plain numpy arrays.  ``source`` names the file in the error message.

    Keys and strings of Python 2 pickles come back as ``bytes`` (``encoding='bytes'``), as
    with the official CIFAR loaders.
    """
    try:
        return _PlainDataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError("%s: refused or corrupt pickle (%s); use an official CIFAR archive"
                        % (source, exc)) from None
    except Exception as exc:  # truncated stream, bad opcode, bad array state ...
        raise DataError("%s: corrupt pickle (%s: %s); download the archive again"
                        % (source, type(exc).__name__, exc)) from None


def safe_member_name(archive: str | os.PathLike[str], name: str) -> str:
    """``name`` as a clean relative posix path; DataError if it would escape the folder it is
    extracted or read into (absolute path, drive letter, ``..``)."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or ".." in parts or parts[0].endswith(":"):
        raise DataError("%s: member %r points outside the archive's folder; refusing to read "
                        "this archive" % (archive, name))
    return "/".join(p for p in parts if p not in ("", "."))


def tar_members(archive: str | os.PathLike[str],
                tar: tarfile.TarFile) -> tuple[dict[str, tarfile.TarInfo], set[str]]:
    """``(files, folders)`` of an open ``tarfile``: ``{clean name: TarInfo}`` of its regular
    files and the set of its folder names.  Every member is checked first: a path escaping the
    folder, a symbolic or hard link, a device or FIFO raises DataError naming the member."""
    files, folders = {}, set()
    for member in tar.getmembers():
        name = safe_member_name(archive, member.name)
        if member.issym() or member.islnk():
            raise DataError("%s: member %r is a link (to %r); links are not allowed in a data "
                            "archive" % (archive, member.name, member.linkname))
        if member.isdir():
            folders.add(name)
        elif member.isfile():
            files[name] = member
        else:
            raise DataError("%s: member %r is a device or special file; refusing to read this "
                            "archive" % (archive, member.name))
    return files, folders


def zip_members(archive: str | os.PathLike[str],
                zf: zipfile.ZipFile) -> tuple[dict[str, zipfile.ZipInfo], set[str]]:
    """Like :func:`tar_members` for an open ``zipfile.ZipFile`` (links and special files are
    recognised from the Unix mode bits)."""
    files, folders = {}, set()
    for info in zf.infolist():
        name = safe_member_name(archive, info.filename)
        mode = info.external_attr >> 16
        if info.is_dir():
            folders.add(name)
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: made without Unix mode bits
            raise DataError("%s: member %r is a link or special file; refusing to read this "
                            "archive" % (archive, info.filename))
        else:
            files[name] = info
    return files, folders
