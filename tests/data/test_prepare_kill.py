"""Kill -9 while prepare_cifar --force replaces a data set: whenever it dies, the next reader
finds the old complete set or the new complete set, and the next run removes the leftovers."""
import os
import shutil
import subprocess
import sys

import pytest

from mxcnn import common
from mxcnn.data import iterators
from mxcnn.data.prepare_cifar import prepare
from mxcnn.data.recfile import dataset_names

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "data", "prepare_cifar.py")


def _quiet(**kwargs):
    return prepare("cifar10", quiet=True, log=lambda message: None, **kwargs)


@pytest.fixture
def two_sets(fx, tmp_path):
    """``(work folder holding set A, pristine copy of it, A's bytes, source B, B's bytes)``;
    ``layout`` (indirect) chooses A's layout: the plain files the converter used to write,
    or the current one."""
    def make(layout):
        a = fx.make_cifar10_binary(str(tmp_path / "a"))
        b = fx.make_tree(str(tmp_path / "b"), per_class=(4, 2))
        work, reference = str(tmp_path / "work"), str(tmp_path / "reference")
        _quiet(source=a.path, output_dir=work)
        if layout == "plain files":
            fx.flatten(work)
        _quiet(source=b.path, output_dir=reference)
        pristine = str(tmp_path / "pristine")
        shutil.copytree(work, pristine, symlinks=True)
        return work, pristine, fx.visible(work), a.path, b.path, fx.visible(reference)
    return make


def _reader_accepts(folder, expected_train):
    train, _ = iterators.get_rec_iters(*(os.path.join(folder, "cifar10_%s.rec" % s)
                                         for s in ("train", "val")), 4, backend="native")
    assert train.num_samples == expected_train


def _restore(work, pristine):
    shutil.rmtree(work)
    shutil.copytree(pristine, work, symlinks=True)


@pytest.mark.parametrize("layout", ["plain files", "file set"])
def test_kill_before_every_file_system_change(fx, two_sets, layout, killed_at):
    work, pristine, old, a, b, new = two_sets(layout)
    seen, k = [], 1
    while killed_at(k, lambda: _quiet(source=b, output_dir=work, force=True)):
        now = fx.visible(work)
        assert now in (old, new), "kill at change %d left a mixed set" % k
        seen.append("new" if now == new else "old")
        _reader_accepts(work, 12 if now == new else 20)
        # the next run (a no-op: the set it finds is up to date) removes what the kill left
        assert _quiet(source=b if now == new else a, output_dir=work) is None
        fs = common.FileSet(work, "cifar10", dataset_names("cifar10"))
        with fs.lock():
            assert fs.stale() == []
        _restore(work, pristine)
        k += 1
    assert fx.visible(work) == new and k > 10 and seen[0] == "old"


def _strace_works():
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _strace_works(), reason="needs strace with ptrace permitted")
def test_strace_kill_at_renames_as_in_the_issue(fx, two_sets):
    """The issue's reproduction: ``strace -e inject=rename...:signal=KILL:when=4`` on the
    real CLI over a set in the old plain-file layout, and at the last of its 9 renames (the
    old set is switched into the new layout, its 7 names become links, the new set is
    switched in).  Every kill point is covered by the test above; this one runs the CLI."""
    work, pristine, old, a, b, new = two_sets("plain files")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for when, expected in ((4, old), (9, old)):
        result = subprocess.run(
            ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=rename,renameat,renameat2",
             "-e", "inject=rename,renameat,renameat2:signal=KILL:when=%d" % when,
             sys.executable, SCRIPT, "--source", b, "--output-dir", work, "--force", "--quiet"],
            capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == -9, (when, result.returncode, result.stderr[-500:])
        assert fx.visible(work) == expected, "kill at rename %d" % when
        _restore(work, pristine)
