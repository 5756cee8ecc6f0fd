"""common.files: atomic single files and FileSet (a group of files replaced as a unit)."""
import os
import shutil
import signal
import stat

import pytest

from mxcnn import common
from mxcnn.common.files import FileSet

NAMES = ["run_a.bin", "run_b.bin", "run_meta.json"]


def visible(folder, names=NAMES):
    """{name: bytes or None} as a reader of the member names sees them."""
    out = {}
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as f:
                out[name] = f.read()
        except FileNotFoundError:
            out[name] = None
    return out


def contents(tag):
    return {name: ("%s:%s" % (tag, name)).encode() * (1 + len(tag)) for name in NAMES}


def write_version(fileset, data):
    with fileset.lock(), fileset.replace() as folder:
        for name, blob in data.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(blob)


def test_replace_switches_every_member_at_once_and_keeps_the_names(tmp_path):
    fs = FileSet(str(tmp_path), "run", NAMES)
    assert not fs.complete() and fs.current() is None
    write_version(fs, contents("old"))
    assert visible(str(tmp_path)) == contents("old") and fs.complete()
    first = fs.current()
    for name in NAMES:  # users' names stay, as relative links into the current version
        assert os.readlink(tmp_path / name) == os.path.join(".run.set", "current", name)
    write_version(fs, contents("new"))
    assert visible(str(tmp_path)) == contents("new")
    assert fs.current() != first and not os.path.exists(first)  # the old version is gone
    assert sorted(os.listdir(fs.store)) == ["current", "lock", os.path.basename(fs.current())]
    with fs.lock():
        assert fs.stale() == []


def test_a_failing_writer_leaves_the_old_set_and_nothing_else(tmp_path):
    fs = FileSet(str(tmp_path), "run", NAMES)
    write_version(fs, contents("old"))
    before = sorted(os.listdir(fs.store))
    with pytest.raises(OSError, match="disk full"):
        with fs.lock(), fs.replace() as folder:
            open(os.path.join(folder, NAMES[0]), "wb").write(b"half")
            raise OSError(28, "disk full")
    with pytest.raises(ValueError, match="run_meta.json was not written"):
        with fs.lock(), fs.replace() as folder:
            for name in NAMES[:2]:
                open(os.path.join(folder, name), "wb").write(b"x")
    assert visible(str(tmp_path)) == contents("old") and sorted(os.listdir(fs.store)) == before


def _legacy(folder, data):
    """Plain files at the member names, as an older writer left them."""
    for name, blob in data.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)


@pytest.mark.parametrize("start", ["fresh", "plain files", "a file set"])
def test_kill_at_every_step_leaves_the_old_or_the_new_complete_set(tmp_path, start, killed_at):
    """Kill -9 before each file-system change of a replacement: a reader then sees the old
    complete set or the new complete set, and the next writer removes the leftovers."""
    old, new = contents("old"), contents("new")
    folder = str(tmp_path / "f")
    os.mkdir(folder)
    if start == "plain files":
        _legacy(folder, old)
    elif start == "a file set":
        write_version(FileSet(folder, "run", NAMES), old)
    else:
        old = dict.fromkeys(NAMES)
    pristine = str(tmp_path / "pristine")
    shutil.copytree(folder, pristine, symlinks=True)
    seen, k = set(), 1
    while killed_at(k, lambda: write_version(FileSet(folder, "run", NAMES), new)):
        now = visible(folder)
        assert now in (old, new), (k, now)
        seen.add("new" if now == new else "old")
        fs = FileSet(folder, "run", NAMES)
        with fs.lock():
            fs.remove_stale()
            assert fs.stale() == []
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder, symlinks=True)
        k += 1
    assert visible(folder) == new and seen >= {"old"} and k > 5
    if start == "plain files":  # the migration to links switched the old bytes first
        assert seen == {"old", "new"}


def test_stale_finds_and_removes_what_a_killed_writer_left(tmp_path, killed_at):
    folder = str(tmp_path)
    fs = FileSet(folder, "run", NAMES)
    write_version(fs, contents("old"))

    def killed_while_writing():  # its new version is written, not yet switched in
        with fs.lock(), fs.replace() as new:
            for name, blob in contents("new").items():
                open(os.path.join(new, name), "wb").write(blob)
            os.kill(os.getpid(), signal.SIGKILL)
    assert killed_at(0, killed_while_writing)
    orphan = os.path.join(folder, ".run_a.bin.0123abcd.tmp")
    open(orphan, "wb").write(b"x" * 1000)
    with fs.lock():
        stale = fs.stale()
        assert orphan in stale and any(os.path.dirname(p) == fs.store for p in stale)
        removed, freed = fs.remove_stale()
        assert sorted(removed) == sorted(stale) and freed >= 1000
        assert fs.stale() == []
    assert visible(folder) == contents("old")


def test_lock_is_exclusive_and_leaves_no_trace_when_nothing_was_written(tmp_path):
    fs = FileSet(str(tmp_path), "run", NAMES)
    with fs.lock():
        with pytest.raises(common.UserError, match="another process"):
            with FileSet(str(tmp_path), "run", NAMES).lock():
                pass
        with pytest.raises(RuntimeError):
            with fs.lock():
                pass
    assert os.listdir(str(tmp_path)) == []
    with pytest.raises(RuntimeError, match="under FileSet.lock"):
        with fs.replace():
            pass


@pytest.mark.parametrize("mask, file_mode, dir_mode",
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_versions_honour_the_umask(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        fs = FileSet(str(tmp_path), "run", NAMES)
        write_version(fs, contents("a"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(fs.store).st_mode) == dir_mode
    assert stat.S_IMODE(os.stat(fs.current()).st_mode) == dir_mode
    for name in NAMES:
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == file_mode


def test_bad_member_names_are_refused(tmp_path):
    for names in ([], ["a", "a"], ["sub/a"], [".hidden"], [""]):
        with pytest.raises(ValueError):
            FileSet(str(tmp_path), "run", names)
