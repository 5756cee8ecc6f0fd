"""The trainer's GPU path, simulated on a CPU: device ids against a faked
``num_gpus()``, what ``--deterministic`` sets for GPU contexts, the GPU input pipeline and
memonger device, ``--num-examples`` above the data, and the dist resume agreement."""
import os
import subprocess
import sys
import types

import mxnet as mx
import pytest

from mxcnn.common import devices
from mxcnn.train import fit, train_cifar
from mxcnn.train import job as jobmod

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_ids_are_checked_against_the_gpus_mxnet_sees(monkeypatch):
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    assert devices.check_gpus(devices.parse_devices("0,1")) == [mx.gpu(0), mx.gpu(1)]
    with pytest.raises(fit.common.UserError, match="sees 2 GPU"):
        devices.check_gpus(devices.parse_devices("1,2"))
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 0)
    with pytest.raises(fit.common.UserError, match="CPU-only build"):
        devices.check_gpus(devices.parse_devices("0"))


def test_gpus_0_on_this_machine_is_one_line_and_exit_2():
    if mx.context.num_gpus():
        pytest.skip("this machine has a GPU")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train", "train_cifar.py"),
                          "--gpus", "0", "--benchmark", "1"], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "--gpus 0" in out.stderr


def test_deterministic_on_faked_gpus_sets_cudnn_settings(monkeypatch):
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    for key in ("MXNET_ENFORCE_DETERMINISM", "MXNET_CUDNN_AUTOTUNE_DEFAULT"):
        monkeypatch.delenv(key, raising=False)
    seen = {}

    def no_training(job):  # nothing is bound: only what main() prepared is looked at
        seen["contexts"] = job.contexts
        seen["env"] = {k: os.environ.get(k) for k in ("MXNET_ENFORCE_DETERMINISM",
                                                      "MXNET_CUDNN_AUTOTUNE_DEFAULT")}
        return 0

    monkeypatch.setattr(train_cifar, "run", no_training)
    assert train_cifar.main(["--gpus", "0,1", "--deterministic", "1", "--benchmark", "1",
                             "--network", "resnet", "--num-layers", "8"]) == 0
    assert seen["contexts"] == [mx.gpu(0), mx.gpu(1)]
    assert seen["env"] == {"MXNET_ENFORCE_DETERMINISM": "1", "MXNET_CUDNN_AUTOTUNE_DEFAULT": "0"}
    # a value the user exported wins
    monkeypatch.setenv("MXNET_CUDNN_AUTOTUNE_DEFAULT", "1")
    train_cifar.main(["--gpus", "0", "--deterministic", "1", "--benchmark", "1",
                      "--network", "resnet", "--num-layers", "8"])
    assert seen["env"]["MXNET_CUDNN_AUTOTUNE_DEFAULT"] == "1"


def _fake_job(contexts, **args):
    job = types.SimpleNamespace(contexts=contexts, args=types.SimpleNamespace(**args))
    return job


def test_gpu_contexts_get_prefetch_and_pinned_memory():
    assert train_cifar._gpu_input(_fake_job([mx.gpu(0), mx.gpu(1)])) == {"prefetch": 2,
                                                                         "pin_memory": True}
    assert train_cifar._gpu_input(_fake_job([mx.cpu(0)])) == {}


def test_memonger_plans_on_the_training_devices(monkeypatch):
    from mxcnn.graph import memonger
    calls = []
    monkeypatch.setattr(memonger, "plan", lambda sym, ctx=None, **shapes: calls.append((ctx, shapes)) or sym)
    job = _fake_job([mx.gpu(0), mx.gpu(1)], memonger=1, batch_size=64)
    job.symbol, job.image_shape = mx.sym.var("data"), (3, 32, 32)
    train_cifar._planned_symbol(job, types.SimpleNamespace(info=lambda *a: None))
    assert calls == [([mx.gpu(0), mx.gpu(1)], {"data": (32, 3, 32, 32)})]


def test_num_examples_above_the_records_is_refused(tmp_path):
    rec = tmp_path / "t_train.rec"
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "t_train.idx"), str(rec), "w")
    for i in range(10):
        writer.write_idx(i, b"record %d" % i)
    writer.close()
    job = _fake_job([mx.cpu()], num_examples=11, data_train=str(rec))
    job.stats, job.train_rec = None, str(rec)
    with pytest.raises(jobmod.UsageError, match="--num-examples 11 is more than the 10 records"):
        jobmod.count_examples(job)
    job.args.num_examples = 8
    assert jobmod.count_examples(job) == 8
    job.args.num_examples = None
    assert jobmod.count_examples(job) == 10


def test_dist_workers_must_resume_from_the_same_epoch(monkeypatch, capsys):
    kv = types.SimpleNamespace(type="dist_sync", num_workers=2, rank=0)
    job = types.SimpleNamespace(begin_epoch=1, prefix="p", resume_prefix="p")
    log = types.SimpleNamespace(info=lambda *a: None)
    monkeypatch.setattr(train_cifar, "_sum_over_workers", lambda kv, key, values: [1 + 2, 1 + 4])
    assert train_cifar._resume_across_workers(job, kv, 0, log) == 2  # epochs 1 and 2
    err = capsys.readouterr().err
    assert "resume from different epochs" in err and err.count("\n") == 1
    monkeypatch.setattr(train_cifar, "_sum_over_workers", lambda kv, key, values: [2, 2])
    assert train_cifar._resume_across_workers(job, kv, 0, log) == 0  # both from epoch 1
    assert train_cifar._resume_across_workers(job, None, 0, log) == 0
