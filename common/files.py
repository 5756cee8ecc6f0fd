"""Files that appear whole or not at all, with the permissions the user's umask gives.

A file is written under a hidden temporary name in its own folder
(``.<name>.<random>.tmp``), flushed to disk, given mode ``0o666 & ~umask`` (``mkstemp``
alone would leave it 0600), and moved onto its real name with ``os.replace``.  A crash
leaves at most such a temporary file, which :func:`stale_temp_files` finds.
"""
import glob
import os
import tempfile

__all__ = ["TMP_SUFFIX", "umask", "atomic_write", "atomic_write_text", "stale_temp_files"]

TMP_SUFFIX = ".tmp"


def umask():
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


def atomic_write(path, write, make_dirs=True):
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


def atomic_write_text(path, data, make_dirs=True):
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


def stale_temp_files(path):
    """Temporary files :func:`atomic_write` left beside ``path`` (a killed writer's)."""
    folder, base = os.path.split(os.path.abspath(path))
    return sorted(glob.glob(os.path.join(glob.escape(folder), "." + glob.escape(base) + ".*" + TMP_SUFFIX)))
