"""Helpers every test package shares, as fixtures (test files cannot import each other under
--import-mode=importlib)."""
import os
import shutil
import signal
import subprocess
import traceback

import pytest

#: the file-system changes a kill is injected before (what FileSet and rmtree call)
_MUTATORS = [(os, "replace"), (os, "rename"), (os, "symlink"), (os, "link"), (os, "remove"),
             (os, "unlink"), (os, "rmdir"), (os, "mkdir"), (shutil, "copy2")]


def _count_and_kill(k):
    """Wrap every file-system mutator so that the k-th call SIGKILLs this process first."""
    calls = [0]

    def wrap(func):
        def counted(*args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return func(*args, **kwargs)
        return counted
    for module, name in _MUTATORS:
        setattr(module, name, wrap(getattr(module, name)))


def _killed_at(k, work):
    """Run ``work()`` in a forked child that SIGKILLs itself just before its k-th file-system
    change; True when it was killed there, False when ``work`` finished first.  A ``work``
    that raises fails the test with the child's traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        os.close(read_end)
        try:
            _count_and_kill(k)
            work()
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
            os._exit(3)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_traceback = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "work() failed in the child:\n" + child_traceback
    return False


@pytest.fixture(scope="session")
def killed_at():
    """``killed_at(k, work)``: run ``work()`` in a forked child SIGKILLed before its k-th
    file-system change (True if killed there, False if ``work`` finished first)."""
    return _killed_at


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MB file system (tmpfs) mounted on a fresh folder, for full-disk tests; skipped
    where this process cannot mount (not root, or no mount in this container)."""
    folder = tmp_path / "small_fs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 3 MB file system needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % mounted.stderr.strip())
    try:
        yield str(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
