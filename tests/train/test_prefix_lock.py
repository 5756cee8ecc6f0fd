"""One run per --model-prefix, from its first second to its last: two trainings started at
the same moment on one prefix leave one refusal (one line, exit 2) and one run whose
checkpoints load with plain ``mx.model.load_checkpoint``; a run killed with SIGKILL leaves
a lock file that does not block the next run."""
import json
import os
import signal
import subprocess
import sys
import time

import mxnet as mx
import pytest

from mxcnn.common import files
from mxcnn.inference import checkpoint as ckpt
from mxcnn.train import train_cifar
from tests.train.cli_helpers import ROOT, SCRIPT, SIDE, base_args, env

REFUSALS = ("is in use by another training run", "holds another run")


def spawn(args):
    return subprocess.Popen([sys.executable, SCRIPT] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)


def with_depth(args, layers):
    args = list(args)
    args[args.index("--num-layers") + 1] = str(layers)
    return args


def assert_loadable(prefix):
    """Every complete checkpoint loads with plain MXNet, and its weights fit its symbol."""
    epochs = [e for e in ckpt.list_epochs(prefix)
              if os.path.exists(ckpt.checkpoint_paths(prefix, e)["state"])]
    assert epochs and epochs == ckpt.list_epochs(prefix)
    for epoch in epochs:
        sym, arg, aux = mx.model.load_checkpoint(prefix, epoch)
        arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, SIDE, SIDE), softmax_label=(1,))
        wanted = dict(zip(sym.list_arguments(), arg_shapes))
        wanted.update(zip(sym.list_auxiliary_states(), aux_shapes))
        for name, value in list(arg.items()) + list(aux.items()):
            assert tuple(value.shape) == tuple(wanted[name]), (epoch, name)
        assert set(arg) == set(wanted) - {"data", "softmax_label"} - set(aux)


def test_two_runs_started_together_on_one_prefix(records, tmp_path):
    prefix = str(tmp_path / "shared" / "m")
    procs = {8: spawn(with_depth(base_args(records, prefix, "--num-epochs", "1"), 8)),
             14: spawn(with_depth(base_args(records, prefix, "--num-epochs", "2"), 14))}
    results = {depth: (proc.wait(timeout=300), proc.communicate()[1]) for depth, proc in procs.items()}
    for _, err in results.values():
        assert "Traceback" not in err, err[-3000:]
    assert sorted(code for code, _ in results.values()) == [0, 2], results
    winner = [depth for depth, (code, _) in results.items() if code == 0][0]
    loser_err = [err for code, err in results.values() if code == 2][0]
    lines = [line for line in loser_err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("train_cifar.py: error: --model-prefix %s " % prefix)
    assert any(refusal in lines[0] for refusal in REFUSALS), lines[0]
    assert "another --model-prefix" in lines[0]
    assert_loadable(prefix)
    assert ckpt.latest_epoch(prefix) == {8: 1, 14: 2}[winner]
    assert {json.load(open(p)).get("num_layers") for p in
            (ckpt.checkpoint_paths(prefix, e)["state"] for e in ckpt.list_epochs(prefix))} == {winner}
    assert not os.path.exists(prefix + ".lock") and not ckpt.temp_files(prefix)


def test_a_held_prefix_refuses_with_the_choices(records, tmp_path, capsys):
    prefix = str(tmp_path / "m")
    lock = files.PathLock(prefix + ".lock")
    assert lock.acquire()
    try:
        assert train_cifar.main(base_args(records, prefix, "--num-epochs", "1")) == 2
        assert capsys.readouterr().err.strip() == (
            "train_cifar.py: error: --model-prefix %s is in use by another training run (process "
            "%d holds %s.lock); wait for it to finish, choose another --model-prefix, or stop that "
            "run" % (prefix, os.getpid(), prefix))
        assert os.listdir(str(tmp_path)) == ["m.lock"]  # nothing else was written
    finally:
        lock.release()
    assert not os.path.exists(prefix + ".lock")


def test_a_killed_run_does_not_block_the_next(records, tmp_path, capsys):
    prefix = str(tmp_path / "m")
    holder = spawn(base_args(records, prefix, "--num-epochs", "1000"))
    probe = files.PathLock(prefix + ".lock")
    deadline = time.time() + 120
    while holder.poll() is None and time.time() < deadline:
        if os.path.exists(prefix + ".lock") and not probe.acquire():
            break  # the holder has it
        probe.release()
        time.sleep(0.2)
    else:
        pytest.fail("the first run never took the lock: %s" % holder.communicate()[1][-2000:])
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    assert os.path.exists(prefix + ".lock")  # a stale lock file, released by the kernel
    code = train_cifar.main(base_args(records, prefix, "--num-epochs", "1", "--overwrite"))
    assert code == 0, capsys.readouterr().err[-3000:]
    assert_loadable(prefix)
    assert ckpt.latest_epoch(prefix) == 1 and not os.path.exists(prefix + ".lock")
