"""train_cifar.py against a hostile user: bad numbers, impossible paths, a missing
GPU, damaged checkpoints and another run's prefix each give one line and exit 2 and touch
nothing; a diverging run stops before a non-finite checkpoint; a kill at any rename of a
save leaves the previous epoch as the newest complete one; every output honours the umask."""
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from mxcnn.inference import checkpoint as ckpt
from mxcnn.train import fit, train_cifar
from tests.train.cli_helpers import ROOT, SCRIPT, SIDE, base_args, env


def save_run(prefix, epochs=2):
    """A finished run of base_args' network (resnet-8, 4 classes): checkpoints 1..epochs + log."""
    from mxcnn import symbols
    sym = symbols.get_symbol("resnet", 4, 8, (3, SIDE, SIDE))
    arg, aux = fit.initial_params(sym, (2, 3, SIDE, SIDE))
    for epoch in range(1, epochs + 1):
        ckpt.save_checkpoint(prefix, epoch, sym, arg, aux, None,
                             {"network": "resnet", "num_layers": 8, "num_update": 6 * epoch})
    with open(prefix + "-log.jsonl", "w") as handle:
        for epoch in range(1, epochs + 1):
            record = {"epoch": epoch, "train_loss": 1.0, "lr": 0.05}
            handle.write(json.dumps(record, sort_keys=True) + "\n")  # as EpochLog writes it
    return prefix


def fingerprint(folder):
    """{name: sha256} of every file under ``folder``: to show a refusal changed nothing."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def read_only_dir(path):
    """Make ``path`` a folder nobody can write (root too: chattr +i); False if impossible."""
    os.makedirs(path)
    os.chmod(path, 0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", path], capture_output=True)
    try:
        open(os.path.join(path, "probe"), "w").close()
    except OSError:
        return True
    os.remove(os.path.join(path, "probe"))
    return False


def undo_read_only(path):
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", path], capture_output=True)
    os.chmod(path, 0o755)


GPUS = mx.context.num_gpus()

HOSTILE = [
    # (case, extra args, fragments of the one error line)
    ("lr nan", ["--lr", "nan"], ["--lr must be a positive learning rate", "got nan"]),
    ("lr negative", ["--lr", "-1"], ["--lr must be a positive learning rate", "got -1.0"]),
    ("lr inf", ["--lr", "inf"], ["--lr must be a positive"]),
    ("weight decay negative", ["--wd", "-0.1"], ["--wd must be >= 0"]),
    ("momentum 1", ["--mom", "1"], ["--mom must be in [0, 1)"]),
    ("label smoothing 1", ["--label-smoothing", "1"], ["--label-smoothing must be in [0, 1)"]),
    ("mixup alpha negative", ["--mixup-alpha", "-0.2"], ["--mixup-alpha must be >= 0"]),
    ("warm-up negative", ["--warmup-epochs", "-1"], ["--warmup-epochs must be >= 0"]),
    ("lr factor above 1", ["--lr-factor", "2"], ["--lr-factor must be in (0, 1]"]),
    ("save period 0", ["--save-period", "0"], ["--save-period must be >= 1"]),
    ("step epoch nan", ["--lr-step-epochs", "nan"], ["--lr-step-epochs 'nan'"]),
    ("seed negative", ["--seed", "-1"], ["--seed must be in [0, 2^32)"]),
    ("zero cpus", ["--cpus", "0"], ["--cpus must be a positive number"]),
    ("gpus and cpus 0", ["--gpus", "0", "--cpus", "0"], ["either --gpus or --cpus"]),
    ("gpu this MXNet lacks", ["--gpus", str(GPUS)], ["this MXNet sees %d GPU(s)" % GPUS, "--cpus"]),
    ("image shape with a letter", ["--image-shape", "3,x,16"], ["'3,x,16' is not of the form C,H,W"]),
    ("prefix under a file", ["--model-prefix", "{file}/x/model"], ["{file} is a file, not a folder"]),
    ("log file under a file", ["--log-file", "{file}/x.log"], ["--log-file", "is a file, not a folder"]),
    ("read-only model folder", ["--model-prefix", "{readonly}/model"],
     ["cannot write to the folder {readonly}"]),
    ("new run over another run", ["--model-prefix", "{run}"],
     ["{run} holds another run (resnet-8", "--resume", "another --model-prefix", "--overwrite"]),
    ("load-epoch below later checkpoints", ["--model-prefix", "{run}", "--load-epoch", "1"],
     ["checkpoint(s) 2 of the run", "would rewrite them", "--overwrite"]),
    ("load-epoch that does not exist", ["--model-prefix", "{run}", "--load-epoch", "99",
                                        "--num-epochs", "1"],
     ["no checkpoint for --load-epoch 99", "saved epochs: 1, 2"]),
    ("negative lookahead period", ["--lookahead-every", "-1"], ["--lookahead-every must be"]),
    ("lookahead decay of 1", ["--lookahead-every", "5", "--lookahead-decay", "1"],
     ["--lookahead-decay must be in [0, 1)"]),
    ("lookahead on dist_async", ["--lookahead-every", "5", "--kv-store", "dist_async"],
     ["dist_async keeps them on the servers", "dist_sync"]),
    ("truncated params on resume", ["--model-prefix", "{truncated}", "--resume"],
     ["{truncated}-0002.params is truncated", "newest intact earlier checkpoint is "
      "{truncated}-0001.params: use --load-epoch 1"]),
    ("altered params on resume", ["--model-prefix", "{altered}", "--resume"],
     ["{altered}-0002.params is corrupt", "{altered}-0001.params"]),
    ("corrupt training state on resume", ["--model-prefix", "{corrupt}", "--resume"],
     ["{corrupt}-0002.json is corrupt", "{corrupt}-0001.params"]),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The files the hostile cases point at: a regular file, a finished run, damaged copies."""
    root = tmp_path_factory.mktemp("hostile")
    out = {"root": str(root), "file": str(root / "a_file"), "run": save_run(str(root / "run" / "m"))}
    open(out["file"], "w").close()
    for name in ("truncated", "altered", "corrupt"):
        shutil.copytree(root / "run", root / name)
        out[name] = str(root / name / "m")
    with open(out["truncated"] + "-0002.params", "r+b") as handle:
        handle.truncate(1000)
    with open(out["altered"] + "-0002.params", "r+b") as handle:
        handle.seek(5000)
        byte = handle.read(1)
        handle.seek(5000)
        handle.write(bytes([byte[0] ^ 1]))  # same size, one bit flipped
    with open(out["corrupt"] + "-0002.json", "w") as handle:
        handle.write('{"epoch": 2, "files"')
    out["readonly"] = str(root / "readonly")
    out["readonly_works"] = read_only_dir(out["readonly"])
    yield out
    undo_read_only(out["readonly"])


@pytest.mark.parametrize("case,extra,fragments", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_one_line_exit_2_nothing_touched(records, places, capsys, case, extra,
                                                       fragments):
    if case == "read-only model folder" and not places["readonly_works"]:
        pytest.skip("this system lets the user write into a read-only folder (root, no chattr)")
    fill = (lambda text: text.format(**places))
    before = fingerprint(places["root"])
    unused = os.path.join(places["root"], "none")
    argv = base_args(records, os.path.join(unused, "m"), "--num-epochs", "3") + [fill(a) for a in extra]
    code = train_cifar.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("train_cifar.py: error: "), err
    for fragment in fragments:
        assert fill(fragment) in lines[0]
    assert fingerprint(places["root"]) == before  # the refusal wrote, removed or changed nothing
    assert not os.path.exists(unused)


def test_gpu_count_of_a_cuda_build_is_checked(records, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 1)  # a CUDA build with one GPU
    assert train_cifar.main(base_args(records, str(tmp_path / "m"), "--gpus", "0,1")) == 2
    assert "--gpus 0,1: this MXNet sees 1 GPU(s), numbered from 0" in capsys.readouterr().err


KILL_AT = {"params": 1, "json": 3}  # the k-th os.replace onto a file of checkpoint 2

INJECT = r"""
import os, runpy, signal, sys
target, k = sys.argv[1], int(sys.argv[2])
real, seen = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    if target in os.path.basename(str(dst)):
        seen[0] += 1
        if seen[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _spawn(args, umask=None, inject=None):
    command = [sys.executable, SCRIPT] + list(args)
    if inject is not None:
        command = [sys.executable, "-c", INJECT, "m-0002.", str(inject)] + command[1:]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), cwd=ROOT,
                            preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def _modes(prefix, log_file):
    names = [prefix + s for s in ("-symbol.json", "-inference-symbol.json", "-0001.params",
                                  "-0001.states", "-0001.json", "-log.jsonl", "-curves.png")]
    return {os.path.basename(p): stat.S_IMODE(os.stat(p).st_mode) for p in names + [log_file]}


def test_runs_kills_divergence_umask_and_overwrite(records, tmp_path):
    """Every end-to-end case at once (2 cores: the processes overlap their imports)."""
    nan_prefix = save_run(str(tmp_path / "nan" / "m"), epochs=1)
    nan_before = fingerprint(tmp_path / "nan")
    over_prefix = save_run(str(tmp_path / "over" / "m"), epochs=2)
    procs = {
        "nan": _spawn(base_args(records, nan_prefix, "--resume", "--num-epochs", "3", "--lr", "1e6")),
        "overwrite": _spawn(base_args(records, over_prefix, "--overwrite", "--num-epochs", "1",
                                      "--data-val", "none")),
    }
    for mask in (0o022, 0o077):
        prefix = str(tmp_path / ("umask%03o" % mask) / "m")
        args = [a for a in base_args(records, prefix, "--num-epochs", "1", "--log-file",
                                     prefix + ".log") if a != "--no-plot"]
        procs["umask%03o" % mask] = _spawn(args, umask=mask)
    for what, k in KILL_AT.items():
        procs["kill-" + what] = _spawn(base_args(records, str(tmp_path / ("kill-" + what) / "m"),
                                                 "--num-epochs", "2"), inject=k)
    results = {name: (proc, proc.communicate(timeout=240)[1]) for name, proc in procs.items()}
    # the killed saves, resumed: each continues from epoch 1 and completes epoch 2
    resumes = {}
    for what in KILL_AT:
        proc, err = results["kill-" + what]
        prefix = str(tmp_path / ("kill-" + what) / "m")
        assert proc.returncode == -9, (what, err[-2000:])
        assert ckpt.latest_epoch(prefix) == 1  # the interrupted epoch 2 does not count
        assert ckpt.damage(prefix, 1) is None
        assert ckpt.temp_files(prefix)  # what the kill left
        resumes[what] = _spawn(base_args(records, prefix, "--num-epochs", "2", "--resume"))
    _check_divergence(*results["nan"], nan_prefix, nan_before)
    _check_overwrite(*results["overwrite"], over_prefix)
    for mask in (0o022, 0o077):
        proc, err = results["umask%03o" % mask]
        prefix = str(tmp_path / ("umask%03o" % mask) / "m")
        assert proc.returncode == 0, err[-2000:]
        assert _modes(prefix, prefix + ".log") == dict.fromkeys(_modes(prefix, prefix + ".log"),
                                                                0o666 & ~mask), mask
    for what, proc in resumes.items():
        err = proc.communicate(timeout=240)[1]
        prefix = str(tmp_path / ("kill-" + what) / "m")
        assert proc.returncode == 0, (what, err[-2000:])
        assert "resuming from %s-0001.params" % prefix in err, what
        assert "temporary file(s) a killed writer left" in err, what
        assert ckpt.latest_epoch(prefix) == 2 and ckpt.damage(prefix, 2) is None, what
        assert not ckpt.temp_files(prefix), what
        log = [json.loads(line) for line in open(prefix + "-log.jsonl")]
        assert [r["epoch"] for r in log] == [1, 2], what


def _check_divergence(proc, err, prefix, before):
    lines = [line for line in err.splitlines() if "error:" in line]
    assert proc.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    assert len(lines) == 1 and "at epoch 2 (Epoch[1]), batch " in lines[0], err[-2000:]
    assert "last good checkpoint: %s-0001.params" % prefix in lines[0]
    assert re.search(r"(loss became nan|parameters became NaN/Inf \()", lines[0]), lines[0]
    after = fingerprint(os.path.dirname(prefix))
    assert {k: v for k, v in after.items() if k in before} == before  # checkpoint 1 and log intact
    assert not [name for name in after if "-0002" in name or "-0003" in name]


def _check_overwrite(proc, err, prefix):
    assert proc.returncode == 0, err[-2000:]
    assert "--overwrite: removed" in err
    assert ckpt.saved_epochs(prefix) == [1] and ckpt.damage(prefix, 1) is None
    log = [json.loads(line) for line in open(prefix + "-log.jsonl")]
    assert len(log) == 1 and "val_error" not in log[0]  # --data-val none: no validation
    assert "Validation-accuracy" not in err
    assert np.isfinite(log[0]["train_loss"]) and log[0]["train_loss"] != 1.0  # the new run's
