"""Files that appear whole or not at all, with the permissions the user's umask gives.

A file is written under a hidden temporary name in its own folder
(``.<name>.<random>.tmp``), flushed to disk, given mode ``0o666 & ~umask`` (``mkstemp``
alone would leave it 0600), and moved onto its real name with ``os.replace``.  A crash
leaves at most such a temporary file, which :func:`stale_temp_files` finds.

:class:`FileSet` replaces a group of files (a data set's records + stats, an epoch's
checkpoint files) as a unit: one ``rename(2)`` switches every member at once.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import UserError, error_line

try:
    import fcntl
except ImportError:  # not POSIX: FileSet writers are not serialised
    fcntl = None

__all__ = ["TMP_SUFFIX", "umask", "atomic_write", "atomic_write_text", "stale_temp_files",
           "file_digest", "digest_mismatch", "is_disk_full", "write_failure", "size_text",
           "PathLock",
           "FileSet"]

TMP_SUFFIX = ".tmp"


def umask() -> int:
    """The process umask (read from /proc where it can be, without changing it)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_path(path):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=TMP_SUFFIX, dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())
    return tmp


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object],
                 make_dirs: bool = True) -> None:
    """Call ``write(tmp_path)``, then move ``tmp_path`` onto ``path`` (same folder).

    ``write`` may write the file by name (``nd.save``, ``savefig``) or open it itself.  On
    any exception the temporary file is removed and ``path`` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if make_dirs:
        os.makedirs(folder, exist_ok=True)
    tmp = _temp_path(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], data: str | bytes, make_dirs: bool = True) -> None:
    """Write ``data`` (str or bytes) to ``path`` atomically."""
    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    atomic_write(path, write, make_dirs=make_dirs)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stale_temp_files(path: str | os.PathLike[str]) -> list[str]:
    """Temporary files :func:`atomic_write` left beside ``path`` (a killed writer's)."""
    folder, base = os.path.split(os.path.abspath(path))
    return sorted(glob.glob(os.path.join(glob.escape(folder), "." + glob.escape(base) + ".*" + TMP_SUFFIX)))


def file_digest(path: str | os.PathLike[str]) -> dict[str, int | str]:
    """``{"bytes": size, "sha256": hex}`` of ``path``: what a manifest records of a file
    written earlier so that a reader can tell it from a truncated or altered one."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def digest_mismatch(path: str | os.PathLike[str], recorded: Mapping[str, Any],
                    checksum: bool = True) -> str | None:
    """None when ``path`` matches ``recorded`` (a :func:`file_digest`), else what is wrong, as
    words that follow the file name: "is missing", "is truncated (10 of 20 bytes)", ...
    ``checksum=False`` compares sizes only (no read)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return "is missing"
    want = int(recorded.get("bytes", -1))
    if size != want:
        return ("is truncated (%d of %d bytes)" % (size, want) if size < want
                else "has %d bytes, %d were written" % (size, want))
    if checksum and recorded.get("sha256") and file_digest(path)["sha256"] != recorded["sha256"]:
        return "is corrupt (its SHA-256 differs from the one recorded when it was written)"
    return None


def is_disk_full(err: BaseException) -> bool:
    """True for an error of a write that ran out of space: ``ENOSPC``/``EDQUOT``, or MXNet's
    "FileStream.Write incomplete" (dmlc's short ``fwrite``, which carries no errno)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return "Write incomplete" in str(err)


def size_text(size: float) -> str:
    """``"1.5 MB"``: a byte count for messages (powers of 1024)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return ("%d %s" if unit == "bytes" else "%.1f %s") % (size, unit)
        size /= 1024.0


def write_failure(folder: str | os.PathLike[str], err: BaseException) -> str:
    """Why writing into ``folder`` failed, in words that follow "cannot write ...": the full
    file system with its free space ("the file system of F is full (1.2 MB free)"), else the
    system's reason.  For one-line messages."""
    try:
        free = size_text(shutil.disk_usage(folder).free)
    except OSError:
        free = "free space unknown"
    if is_disk_full(err):
        return "the file system of %s is full (%s free)" % (folder, free)
    return "%s (in %s, %s free)" % (getattr(err, "strerror", None) or error_line(err), folder, free)


class PathLock:
    """An exclusive ``flock`` on the file ``path``, held until :meth:`release` (or until the
    process ends: the kernel drops the lock of a killed holder, so a stale file never blocks).

    :meth:`acquire` returns False at once when another process holds it.  The holder writes
    its pid into the file (:meth:`holder` reads it) and removes the file on release; a
    process that locked a file just removed by its holder notices and locks the new one."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.path.abspath(path)
        self._fd = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it.  OSError when the folder cannot
        be written."""
        if self._fd is not None:
            raise RuntimeError("PathLock %s is held already" % self.path)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            try:  # the previous holder may have removed the file: then lock the new one
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The pid written by the holder, or None when it cannot be read."""
        try:
            with open(self.path) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every system opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _size(path):
    if os.path.islink(path) or not os.path.isdir(path):
        return os.lstat(path).st_size
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


class FileSet:
    """Files of one folder that are replaced together: a reader, or a kill at any instant,
    sees the old complete set or the new complete set, never a mix.

    For key ``K`` and member names ``N`` the folder holds::

        N                   -> .K.set/current/N   relative symbolic links, made once
        .K.set/current      -> v-<random>         the one link a switch renames over
        .K.set/v-<random>/N                       the real files of each version
        .K.set/lock                               the writers' lock (``flock``)

    Programs that open ``folder/N`` (MXNet, ``cp``, ``ls``) follow the links, so the names
    users know stay where they were.  :meth:`replace` writes a new version into a fresh
    folder, flushes it to disk and makes it current with one ``os.replace`` of ``current``.
    Plain files found at the member names (an older layout) are first hard-linked into a
    version of their own and swapped for links that show the same bytes, so even that
    migration keeps the old set whole at every instant.

    Usage (a writer)::

        fs = FileSet(folder, "cifar10", ["cifar10_train.rec", ..., "cifar10_stats.json"])
        with fs.lock():                 # UserError if another process writes this set
            fs.remove_stale()           # what killed writers left (versions, temp links)
            with fs.replace() as new:   # a folder: write every member there, by its name
                write(os.path.join(new, "cifar10_train.rec")) ...

    A reader asks :meth:`complete`.  Deleting a set: ``rm -r folder/N... folder/.K.set``.
    """

    CURRENT, LOCK, VERSION_PREFIX = "current", "lock", "v-"

    def __init__(self, folder, key, names):
        names = tuple(names)
        if not names or len(set(names)) != len(names) or any(
                not n or os.sep in n or n.startswith(".") for n in names):
            raise ValueError("FileSet needs distinct plain file names, got %r" % (names,))
        if not key or os.sep in key:
            raise ValueError("FileSet key %r must be a plain name" % (key,))
        self.folder = os.path.abspath(folder)
        self.key, self.names = key, names
        self.store = os.path.join(self.folder, "." + key + ".set")
        self._lock_fd = None

    def path(self, name: str) -> str:
        """The visible path of member ``name``."""
        return os.path.join(self.folder, name)

    def current(self) -> str | None:
        """The folder of the current version, or None when there is none."""
        try:
            return os.path.join(self.store, os.readlink(os.path.join(self.store, self.CURRENT)))
        except OSError:
            return None

    def present(self) -> list[str]:
        """Members that exist (a regular file, reached through the link or not)."""
        return [n for n in self.names if os.path.isfile(self.path(n))]

    def complete(self) -> bool:
        """True when every member exists."""
        return len(self.present()) == len(self.names)

    def _target(self, name):
        return os.path.join(os.path.basename(self.store), self.CURRENT, name)

    def _is_link(self, name):
        path = self.path(name)
        return os.path.islink(path) and os.readlink(path) == self._target(name)

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[FileSet]:
        """Hold the writers' lock of this set (an exclusive ``flock`` on ``.K.set/lock``).

        Raises UserError at once when another process holds it, OSError when the folder
        cannot be written.  ``.K.set`` is removed again if it holds nothing but the lock."""
        if self._lock_fd is not None:
            raise RuntimeError("FileSet.lock() is not re-entrant")
        os.makedirs(self.store, exist_ok=True)
        path = os.path.join(self.store, self.LOCK)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise UserError("%s is being written by another process (it holds %s); wait "
                                "for it to finish" % (self.path(self.names[0]), path)) from None
            try:  # the file may have been removed by the previous holder: lock the new one
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._lock_fd = fd
        try:
            yield self
        finally:
            try:
                if os.listdir(self.store) == [self.LOCK]:
                    os.remove(path)
                    os.rmdir(self.store)
            except OSError:
                pass
            self._lock_fd = None
            os.close(fd)

    def _need_lock(self, what):
        if self._lock_fd is None:
            raise RuntimeError("FileSet.%s() must run under FileSet.lock()" % what)

    # ------------------------------------------------------------------ leftovers

    def stale(self) -> list[str]:
        """What interrupted writers left: versions that are not current (a killed writer's
        new version, an old one not yet removed), temporary links, and the
        :func:`atomic_write` temporary files beside the member names.  Only meaningful
        while no writer runs, i.e. under :meth:`lock`."""
        current = self.current()
        found = []
        if os.path.isdir(self.store):
            found = [os.path.join(self.store, e) for e in sorted(os.listdir(self.store))
                     if e not in (self.CURRENT, self.LOCK)
                     and os.path.join(self.store, e) != current]
        for name in self.names:
            found += stale_temp_files(self.path(name))
        return found

    def remove_stale(self) -> tuple[list[str], int]:
        """Remove :meth:`stale` leftovers; ``(paths removed, bytes freed)``."""
        self._need_lock("remove_stale")
        removed, freed = [], 0
        for path in self.stale():
            try:
                freed += _size(path)
                _remove_tree(path)
                removed.append(path)
            except FileNotFoundError:
                pass
        return removed, freed

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def replace(self) -> Iterator[str]:
        """Yield the folder of a new version; write every member into it by its name.

        On a normal exit the version is flushed to disk and made current (one rename);
        the previous version is then removed.  On an exception the new version is removed
        and the current set is left as it was.  Must run under :meth:`lock`."""
        self._need_lock("replace")
        version = self._new_version()
        try:
            yield version
            self._commit(version)
        except BaseException:
            if self.current() != version:
                shutil.rmtree(version, ignore_errors=True)
            raise
        for path in self.stale():  # the previous version (files a reader holds open stay readable)
            if os.path.dirname(path) == self.store:
                _remove_tree(path)

    def _new_version(self):
        while True:
            path = os.path.join(self.store, self.VERSION_PREFIX + uuid.uuid4().hex[:12])
            try:
                os.mkdir(path)  # mode 0777 & ~umask
                return path
            except FileExistsError:
                continue

    def _commit(self, version):
        missing = [n for n in self.names if not os.path.isfile(os.path.join(version, n))]
        if missing:
            raise ValueError("FileSet.replace(): %s was not written" % ", ".join(missing))
        for name in self.names:
            _fsync(os.path.join(version, name))
        _fsync_dir(version)
        if not all(self._is_link(n) for n in self.names):
            self._switch(self._snapshot_visible())  # plain files keep showing the same bytes
            self._make_links()
        self._switch(version)

    def _snapshot_visible(self):
        """A version holding what the member names show now (hard links, else copies)."""
        version = self._new_version()
        for name in self.present():
            try:
                os.link(self.path(name), os.path.join(version, name))  # follows links
            except OSError:
                shutil.copy2(self.path(name), os.path.join(version, name))
                _fsync(os.path.join(version, name))
        _fsync_dir(version)
        return version

    def _make_links(self):
        for name in self.names:
            if not self._is_link(name):
                tmp = _temp_name(self.path(name))
                os.symlink(self._target(name), tmp)
                os.replace(tmp, self.path(name))
        _fsync_dir(self.folder)

    def _switch(self, version):
        tmp = _temp_name(os.path.join(self.store, self.CURRENT))
        os.symlink(os.path.basename(version), tmp)
        os.replace(tmp, os.path.join(self.store, self.CURRENT))  # the one atomic step
        _fsync_dir(self.store)


def _remove_tree(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def _temp_name(path):
    """An unused ``.<name>.<random>.tmp`` beside ``path`` (what :func:`stale_temp_files` finds)."""
    folder, base = os.path.split(path)
    return os.path.join(folder, ".%s.%s%s" % (base, uuid.uuid4().hex[:12], TMP_SUFFIX))
