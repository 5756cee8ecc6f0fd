"""Malicious pickles and archives, corrupt inputs: one-line errors, exit 2, nothing damaged."""
import io
import os
import pickle
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest

from data import prepare_cifar
from data.errors import DataError
from data.safety import load_pickle
from data.prepare_cifar import main


class _Payload:
    """Unpickling this calls ``func(arg)``: in a plain pickle.load it would create a file."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _payload(name, marker):
    import builtins
    code = "open(%r, 'w').close()" % marker
    return {"os.system": _Payload(os.system, "touch %s" % marker),
            "subprocess.call": _Payload(subprocess.call, ["sh", "-c", "touch %s" % marker]),
            "builtins.exec": _Payload(builtins.exec, code),
            "builtins.eval": _Payload(builtins.eval, code)}[name]


@pytest.mark.parametrize("name", ["os.system", "subprocess.call", "builtins.exec", "builtins.eval"])
def test_crafted_pickle_runs_nothing(tmp_path, name):
    proof = str(tmp_path / "proof")
    pickle.loads(pickle.dumps(_payload(name, proof), protocol=2))  # plain pickle: it runs
    assert os.path.exists(proof)
    marker = str(tmp_path / "pwned")
    blob = pickle.dumps({b"data": [_payload(name, marker)]}, protocol=2)
    with pytest.raises(DataError, match="not allowed"):
        load_pickle(blob, "evil.pkl")
    assert not os.path.exists(marker)


def test_plain_numpy_and_python3_bytes_pickles_still_load():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 4, 5):
        data = load_pickle(pickle.dumps({b"data": array, "n": [1, 2.5, b"x", ("t",)]},
                                        protocol=protocol), "ok.pkl")
        np.testing.assert_array_equal(data[b"data"], array)
        assert data["n"] == [1, 2.5, b"x", ("t",)]
    with pytest.raises(DataError):
        load_pickle(pickle.dumps(np.array([object()], dtype=object)), "objects.pkl")


def run_cli(capsys, *args):
    try:
        code = main(list(args) + ["--quiet"])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("prepare_cifar: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def test_malicious_pickle_in_archive_fails_cleanly(fx, tmp_path, out_dir, capsys):
    marker = str(tmp_path / "pwned")

    def poison(name, batch):
        if name == "data_batch_3":
            batch[b"labels"] = _Payload(os.system, "touch %s" % marker)
    fixture = fx.make_cifar10_python(str(tmp_path), mutate=poison)
    code, err = run_cli(capsys, "--source", fixture.path, "--output-dir", out_dir)
    assert_one_line_error(code, err, "data_batch_3", "posix.system")
    assert not os.path.exists(marker) and os.listdir(out_dir) == []


def _tar_with(path, member, blob=b"x"):
    with tarfile.open(path, "w") as tar:
        for name in ("top/train/cat/0.png", "top/test/cat/0.png"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        tar.addfile(member, io.BytesIO(blob) if member.isfile() else None)
    return path


def _member(name, kind, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("member, words", [
    (_member("../escape.png", tarfile.REGTYPE), ["../escape.png", "outside"]),
    (_member("/tmp/absolute.png", tarfile.REGTYPE), ["/tmp/absolute.png", "outside"]),
    (_member("top/train/cat/link.png", tarfile.SYMTYPE, "/etc/passwd"), ["link"]),
    (_member("top/train/cat/hard.png", tarfile.LNKTYPE, "../../outside"), ["link"]),
    (_member("top/train/cat/dev.png", tarfile.CHRTYPE), ["device"]),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_tar_members_are_refused(tmp_path, out_dir, capsys, member, words):
    archive = _tar_with(str(tmp_path / "evil.tar"), member)
    code, err = run_cli(capsys, "--source", archive, "--output-dir", out_dir)
    assert_one_line_error(code, err, "evil.tar", *words)
    assert not os.path.exists(str(tmp_path / "escape.png")) and os.listdir(out_dir) == []


def test_unsafe_zip_member_is_refused(tmp_path, out_dir, capsys):
    archive = str(tmp_path / "evil.zip")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train/cat/0.png", b"x")
        zf.writestr("../../escape.png", b"x")
    code, err = run_cli(capsys, "--source", archive, "--output-dir", out_dir)
    assert_one_line_error(code, err, "evil.zip", "outside")


@pytest.fixture
def good_run(fx, tmp_path, out_dir):
    """A finished conversion in out_dir, and a snapshot of its files' bytes."""
    fixture = fx.make_cifar10_binary(str(tmp_path))
    assert main(["--source", fixture.path, "--output-dir", out_dir, "--quiet"]) == 0
    return {name: open(os.path.join(out_dir, name), "rb").read() for name in os.listdir(out_dir)}


def _truncated(fx, tmp_path):
    path = fx.make_cifar10_python(str(tmp_path / "t")).path
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[:len(blob) // 2])
    return path, ["cifar-10-python-small.tar.gz"]


def _wrong_label_count(fx, tmp_path):
    def drop(name, batch):
        if name == "data_batch_2":
            batch[b"labels"] = batch[b"labels"][:-1]
    return fx.make_cifar10_python(str(tmp_path / "w"), mutate=drop).path, ["data_batch_2", "labels"]


def _empty_class(fx, tmp_path):
    fixture = fx.make_tree(str(tmp_path / "tree"))
    os.makedirs(os.path.join(fixture.path, "train", "emu"))
    return fixture.path, [os.path.join("train", "emu"), "no images"]


def _corrupt_image(fx, tmp_path):
    fixture = fx.make_tree(str(tmp_path / "tree"))
    bad = os.path.join(fixture.path, "test", "dog", "001.png")
    open(bad, "r+b").truncate(40)
    return fixture.path, [bad, "cannot decode"]


def _truncated_binary(fx, tmp_path):
    folder = str(tmp_path / "bin")
    fixture = fx.make_cifar10_binary(folder)
    with tarfile.open(fixture.path) as tar:
        tar.extractall(folder)
    path = os.path.join(folder, "cifar-10-batches-bin", "data_batch_4.bin")
    open(path, "r+b").truncate(3073 * 2 + 100)
    return os.path.join(folder, "cifar-10-batches-bin"), ["data_batch_4.bin", "truncated"]


def _unrecognised(fx, tmp_path):
    path = str(tmp_path / "notes.txt")
    open(path, "w").write("hello")
    return path, ["notes.txt", "not a recognised source"]


def _wrong_dataset(fx, tmp_path):
    return fx.make_cifar100(str(tmp_path / "c"), "binary", "fine").path, ["cifar-100", "--dataset cifar100"]


def _missing(fx, tmp_path):
    return str(tmp_path / "nowhere.tar.gz"), ["nowhere.tar.gz", "does not exist"]


@pytest.mark.parametrize("case", [_truncated, _wrong_label_count, _empty_class, _corrupt_image,
                                  _truncated_binary, _unrecognised, _wrong_dataset, _missing])
def test_bad_sources_exit_2_and_leave_outputs_intact(fx, tmp_path, out_dir, capsys, good_run, case):
    source, words = case(fx, tmp_path)
    code, err = run_cli(capsys, "--source", source, "--output-dir", out_dir, "--force")
    assert_one_line_error(code, err, *words)
    after = {name: open(os.path.join(out_dir, name), "rb").read() for name in os.listdir(out_dir)}
    assert after == good_run  # no temp files left, previous outputs byte-identical


def test_failure_while_packing_leaves_no_half_written_files(fx, tmp_path, out_dir, good_run,
                                                            monkeypatch):
    from data import recfile
    calls = []
    original = recfile.SplitWriter.add

    def failing_add(self, *args):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return original(self, *args)
    monkeypatch.setattr(recfile.SplitWriter, "add", failing_add)
    fixture = fx.make_cifar10_python(str(tmp_path / "p"))
    assert main(["--source", fixture.path, "--output-dir", out_dir, "--quiet"]) == 2
    after = {name: open(os.path.join(out_dir, name), "rb").read() for name in os.listdir(out_dir)}
    assert after == good_run


def test_bad_options_exit_2_with_one_line(capsys, out_dir):
    for args in (["--format", "gif"], ["--quality", "90"], ["--format", "jpeg", "--quality", "0"],
                 ["--label-mode", "coarse", "--source", out_dir]):
        code, err = run_cli(capsys, "--output-dir", out_dir, *args)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (args, err)


def test_no_network_fails_at_once_with_a_hint(monkeypatch, out_dir, capsys):
    monkeypatch.setitem(prepare_cifar.DOWNLOADS, "cifar10",
                        ("https://127.0.0.1:9/cifar-10-python.tar.gz", "0" * 32))
    tic = time.time()
    code, err = run_cli(capsys, "--output-dir", out_dir)
    assert time.time() - tic < prepare_cifar.DOWNLOAD_TIMEOUT
    assert_one_line_error(code, err, "cannot download", "--source")
    assert os.listdir(out_dir) == []  # no partial download left


def test_damaged_official_archive_name_fails_md5(tmp_path, out_dir, capsys):
    fake = str(tmp_path / "cifar-10-python.tar.gz")
    open(fake, "wb").write(b"not the real archive")
    code, err = run_cli(capsys, "--source", fake, "--output-dir", out_dir)
    assert_one_line_error(code, err, "MD5")


def test_script_from_a_checkout_prints_one_line(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "data", "prepare_cifar.py")
    result = subprocess.run([sys.executable, script, "--source", str(tmp_path / "missing"),
                             "--output-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "does not exist" in result.stderr
