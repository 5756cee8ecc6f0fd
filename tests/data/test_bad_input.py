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

from mxcnn.data import prepare_cifar
from mxcnn.data.errors import DataError
from mxcnn.data.prepare_cifar import main
from mxcnn.data.safety import load_pickle


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
    return fx.snapshot(out_dir)


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


def _one_class(fx, tmp_path):
    return fx.make_tree(str(tmp_path / "one"), classes=("cat",)).path, ["1 class (cat)",
                                                                        "at least 2 classes"]


def _one_label_used(fx, tmp_path):
    def all_airplanes(name, batch):
        batch[b"labels"] = [0] * len(batch[b"labels"])
    return fx.make_cifar10_python(str(tmp_path / "a"), mutate=all_airplanes).path, \
        ["1 class (airplane)", "at least 2 classes"]


@pytest.mark.parametrize("case", [_truncated, _wrong_label_count, _empty_class, _corrupt_image,
                                  _truncated_binary, _unrecognised, _wrong_dataset, _missing,
                                  _one_class, _one_label_used])
def test_bad_sources_exit_2_and_leave_outputs_intact(fx, tmp_path, out_dir, capsys, good_run, case):
    source, words = case(fx, tmp_path)
    code, err = run_cli(capsys, "--source", source, "--output-dir", out_dir, "--force")
    assert_one_line_error(code, err, *words)
    assert fx.snapshot(out_dir) == good_run  # no temp files left, previous outputs byte-identical


def test_failure_while_packing_leaves_no_half_written_files(fx, tmp_path, out_dir, good_run,
                                                            monkeypatch):
    from mxcnn.data import recfile
    calls = []
    original = recfile.SplitWriter.add

    def failing_add(self, *args):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return original(self, *args)
    monkeypatch.setattr(recfile.SplitWriter, "add", failing_add)
    fixture = fx.make_cifar10_python(str(tmp_path / "p"))
    assert main(["--source", fixture.path, "--output-dir", out_dir, "--quiet", "--force"]) == 2
    assert fx.snapshot(out_dir) == good_run


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


# ---------------------------------------------------------------- an existing set stays

def _other_tree(fx, tmp_path):
    return ["--source", fx.make_tree(str(tmp_path / "other")).path]


def _same_source_as_jpeg(fx, tmp_path):
    return ["--source", fx.make_cifar10_binary(str(tmp_path)).path, "--format", "jpeg"]


def _changed_source(fx, tmp_path):
    path = fx.make_cifar10_binary(str(tmp_path)).path
    with open(path, "ab") as f:
        f.write(b"\0" * 512)  # the same path, other contents
    return ["--source", path]


@pytest.mark.parametrize("case", [_other_tree, _same_source_as_jpeg, _changed_source])
def test_an_existing_set_is_replaced_only_with_force(fx, tmp_path, out_dir, capsys, good_run,
                                                     case):
    args, before = case(fx, tmp_path), fx.visible(out_dir)
    code, err = run_cli(capsys, *args, "--output-dir", out_dir)
    assert_one_line_error(code, err, "already holds", "--force", "cifar10_stats.json")
    assert fx.snapshot(out_dir) == good_run
    code, err = run_cli(capsys, *args, "--output-dir", out_dir, "--force")
    after = fx.visible(out_dir)
    assert code == 0 and None not in after.values() and after != before


def test_an_interrupted_older_conversion_is_named_and_repaired(fx, tmp_path, out_dir, capsys):
    """A mixed set in the plain-file layout (new train files, old val files and stats, as the
    converter used to leave when killed): readers name it, prepare rebuilds it with --force."""
    from mxcnn.data import iterators
    a, b = fx.make_cifar10_binary(str(tmp_path)), fx.make_tree(str(tmp_path / "t"), size=(32, 32))
    other = str(tmp_path / "other")
    for source, folder in ((a.path, out_dir), (b.path, other)):
        assert main(["--source", source, "--output-dir", folder, "--quiet"]) == 0
        fx.flatten(folder)
    for member in ("cifar10_train.rec", "cifar10_train.idx", "cifar10_train.lst"):
        os.replace(os.path.join(other, member), os.path.join(out_dir, member))
    train, val = (os.path.join(out_dir, "cifar10_%s.rec" % s) for s in ("train", "val"))
    with pytest.raises(DataError) as info:
        iterators.get_rec_iters(train, val, 4)
    message = str(info.value)
    assert "\n" not in message and train in message and "--force" in message
    code, err = run_cli(capsys, "--source", a.path, "--output-dir", out_dir)
    assert_one_line_error(code, err, "incomplete data set", "cifar10_train.rec", "--force")
    assert main(["--source", a.path, "--output-dir", out_dir, "--quiet", "--force"]) == 0
    train_iter, _ = iterators.get_rec_iters(train, val, 4)
    assert train_iter.num_samples == len(a.train_labels)


def test_leftovers_of_a_killed_run_are_removed_by_the_next(fx, tmp_path, out_dir, capsys, good_run):
    """What a kill leaves (an unswitched version, the old converter's hidden .tmp files) is
    removed, and reported, by the next run, even when that run has nothing else to do."""
    fixture = fx.make_cifar10_binary(str(tmp_path))
    orphans = [os.path.join(out_dir, ".cifar10_train.rec.3ec90d26f9f9.tmp"),
               os.path.join(out_dir, ".cifar10.set", "v-0123456789ab", "cifar10_train.rec")]
    for path in orphans:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"\0" * 300000)
    messages = []
    assert prepare_cifar.prepare(source=fixture.path, output_dir=out_dir, quiet=True,
                                 log=messages.append) is None
    assert "removed 2 file(s) (0.6 MB)" in messages[0] and "up to date" in messages[1]
    assert fx.snapshot(out_dir) == good_run


# ---------------------------------------------------------------- the environment

def _read_only_output(fx, tmp, good):
    os.chmod(good, 0o555)
    return ["--output-dir", good, "--force"], [good, "cannot write", "Permission denied"]


def _output_is_a_file(fx, tmp, good):
    path = os.path.join(tmp, "a_file")
    open(path, "w").close()
    return ["--output-dir", path], [path, "is a file"]


def _output_under_a_file(fx, tmp, good):
    path = os.path.join(tmp, "a_file")
    open(path, "w").close()
    return ["--output-dir", os.path.join(path, "x")], [path, "Not a directory"]


def _unreadable_archive(fx, tmp, good):
    path = fx.make_cifar10_binary(os.path.join(tmp, "src")).path
    os.chmod(path, 0)
    return ["--source", path, "--output-dir", os.path.join(tmp, "new")], [path, "Permission denied"]


def _unreadable_class_folder(fx, tmp, good):
    fixture = fx.make_tree(os.path.join(tmp, "tree"))
    folder = os.path.join(fixture.path, "train", "dog")
    os.chmod(folder, 0)
    return ["--source", fixture.path, "--output-dir", os.path.join(tmp, "new")], \
        [folder, "Permission denied"]


def _unreadable_image(fx, tmp, good):
    fixture = fx.make_tree(os.path.join(tmp, "tree"))
    image = os.path.join(fixture.path, "test", "frog", "001.png")
    os.chmod(image, 0)
    return ["--source", fixture.path, "--output-dir", os.path.join(tmp, "new")], \
        [image, "Permission denied"]


@pytest.mark.parametrize("case", [_read_only_output, _output_is_a_file, _output_under_a_file,
                                  _unreadable_archive, _unreadable_class_folder, _unreadable_image])
def test_environment_problems_exit_2_naming_the_path(fx, shared_tmp, as_nobody, capsys, case):
    good = os.path.join(shared_tmp, "good")
    source = fx.make_cifar10_binary(os.path.join(shared_tmp, "first")).path
    assert main(["--source", source, "--output-dir", good, "--quiet"]) == 0
    before = fx.snapshot(good)
    args, words = case(fx, shared_tmp, good)
    if "--source" not in args:
        args = ["--source", source] + args
    for dirpath, _, filenames in os.walk(shared_tmp):  # others may read what the owner may
        for path in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            mode = os.lstat(path).st_mode
            if not os.path.islink(path):
                os.chmod(path, mode | (mode & 0o500) >> 3 | (mode & 0o500) >> 6)
    with as_nobody():
        code, err = run_cli(capsys, *args)
        if case is _read_only_output:  # a read-only folder may still hold an up-to-date set
            assert run_cli(capsys, "--source", source, "--output-dir", good)[0] == 0
    os.chmod(good, 0o755)
    assert_one_line_error(code, err, *words)
    assert fx.snapshot(good) == before


def test_a_failing_disk_exits_2_and_keeps_the_old_set(fx, tmp_path, out_dir, capsys, good_run):
    """A real write error inside MXNet's RecordIO writer (the file-size limit stands in for
    a full disk: the same failed write(2)) is one line naming the file, not an MXNetError."""
    import resource
    import signal
    other = fx.make_tree(str(tmp_path / "tree"), per_class=(40, 3))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60000, hard))
    try:
        code, err = run_cli(capsys, "--source", other.path, "--output-dir", out_dir, "--force")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert_one_line_error(code, err, "cannot write", "cifar10_train.rec")
    assert fx.snapshot(out_dir) == good_run


def test_a_second_run_on_the_same_set_waits_for_none_and_changes_nothing(fx, tmp_path, out_dir,
                                                                         capsys, good_run):
    from mxcnn import common
    from mxcnn.data.recfile import dataset_names
    other = fx.make_tree(str(tmp_path / "tree")).path
    with common.FileSet(out_dir, "cifar10", dataset_names("cifar10")).lock():  # a running writer
        code, err = run_cli(capsys, "--source", other, "--output-dir", out_dir, "--force")
    assert_one_line_error(code, err, "another process", ".cifar10.set")
    assert fx.snapshot(out_dir) == good_run
