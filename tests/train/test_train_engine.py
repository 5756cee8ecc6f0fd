"""The fit engine: Module/Gluon parity, multi-device equivalence, checkpoints, resume, NaN stop."""
import json
import os
import time

import mxnet as mx
import numpy as np
import pytest

from mxcnn.common import devices
from mxcnn.inference import checkpoint as ckpt
from mxcnn.train import fit, progress
from tests.train.engine_helpers import (  # noqa: F401
    NUM_CLASSES,
    assert_params_close,
    config,
    iters,
    params_after,
    tiny_net,
    toy_data,
)


@pytest.mark.parametrize("soft", [False, True])
def test_module_and_gluon_train_the_same(tmp_path, soft):
    extra = dict(label_smoothing=0.1, mixup_alpha=0.4) if soft else {}
    sym = tiny_net(aux_weight=0.3)
    runs = {}
    for engine in fit.ENGINES:
        cfg = config(tmp_path / engine, engine=engine, **extra)
        (tmp_path / engine).mkdir()
        runs[engine] = params_after(sym, cfg)
        records = progress.read_log(cfg.model_prefix + "-log.jsonl")
        runs[engine + "-log"] = records
    assert_params_close(runs["module"][1], runs["gluon"][1], atol=2e-5)
    assert_params_close(runs["module"][2], runs["gluon"][2], atol=2e-5)
    assert "aux_fc_weight" in runs["module"][1]  # the whole grouped symbol was trained and saved
    for a, b in zip(runs["module-log"], runs["gluon-log"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_error"] == pytest.approx(b["val_error"], abs=1e-6)
    assert runs["module-log"][-1]["train_loss"] < runs["module-log"][0]["train_loss"]


@pytest.mark.parametrize("engine", fit.ENGINES)
def test_two_cpu_contexts_match_one(tmp_path, engine):
    # BatchNorm normalises per device, so the equivalence is exact only without BN
    sym = tiny_net(batch_norm=False)
    one = params_after(sym, config(tmp_path / "one", engine=engine, contexts=[mx.cpu(0)]))
    two = params_after(sym, config(tmp_path / "two", engine=engine, contexts=[mx.cpu(0), mx.cpu(1)],
                                   kvstore="device"))
    assert_params_close(one[1], two[1], atol=1e-5)


def test_checkpoint_layout_and_loaders(tmp_path):
    sym = tiny_net()
    cfg = config(tmp_path, num_epochs=2)
    fit.fit(sym, *iters(), cfg)
    prefix = cfg.model_prefix
    for name in ("-symbol.json", "-0001.params", "-0001.states", "-0001.json", "-0002.params",
                 "-log.jsonl"):
        assert os.path.exists(prefix + name), name
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    state = json.load(open(prefix + "-0002.json"))
    assert state["epoch"] == 2 and state["num_update"] == 8 and state["engine"] == "module"
    # plain MXNet loaders read it
    loaded_sym, arg, aux = mx.model.load_checkpoint(prefix, 2)
    assert loaded_sym.list_outputs() == ["softmax_output"]
    assert "bn1_moving_mean" in aux and "fc1_weight" in arg
    # SoftmaxOutput's label is an input of the symbol: name it (its value is unused at inference)
    net = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data", "softmax_label"],
                                       prefix + "-0002.params")
    x, _ = toy_data(8)
    out = net(mx.nd.array(x), mx.nd.zeros(8)).asnumpy()
    mod = mx.mod.Module(loaded_sym, context=mx.cpu())
    mod.bind([("data", (8, 3, 8, 8))], for_training=False)
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    np.testing.assert_allclose(out, mod.get_outputs()[0].asnumpy(), atol=1e-5)
    log = progress.read_log(prefix + "-log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[0]["lr"] == pytest.approx(0.1) and log[1]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("engine,devices", [("module", 1), ("gluon", 1), ("module", 2), ("gluon", 2)])
def test_resume_is_exact(tmp_path, engine, devices):
    """2+2 epochs from the epoch-2 checkpoint == 4 straight (dropout + mixup use per-epoch seeds)."""
    sym = tiny_net(dropout=0.3)
    kw = dict(engine=engine, num_epochs=4, mixup_alpha=0.3, contexts=[mx.cpu(i) for i in range(devices)],
              lr_scheduler_args=dict(mode="step", step_epochs=[3], factor=0.1))
    straight = params_after(sym, config(tmp_path / "a", **kw))

    class Killed(Exception):
        pass

    def kill_after_two(done, record):
        if done == 2:
            raise Killed()

    first = config(tmp_path / "b", epoch_end_callback=kill_after_two, **kw)
    with pytest.raises(Killed):
        fit.fit(sym, *iters(), first)
    # a fresh process would rebuild everything from the files: do the same here
    _, arg, aux = ckpt.load_params(first.model_prefix, 2)
    state = ckpt.load_state(first.model_prefix, 2)
    resumed = params_after(sym, config(tmp_path / "b", begin_epoch=2, arg_params=arg, aux_params=aux,
                                       states_file=ckpt.checkpoint_paths(first.model_prefix, 2)["states"],
                                       begin_num_update=state["num_update"], **kw))
    assert_params_close(straight[1], resumed[1], atol=0)
    # both engines save the MEAN of the per-device BatchNorm running statistics and a resumed
    # run restarts every device from it: exact on one device, within rounding on several
    assert_params_close(straight[2], resumed[2], atol=0 if devices == 1 else 1e-6)
    log = progress.read_log(first.model_prefix + "-log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    sym = tiny_net(batch_norm=False)
    cfg = config(tmp_path, num_epochs=1)
    fit.fit(sym, *iters(), cfg)
    good = open(cfg.model_prefix + "-0001.params", "rb").read()
    _, arg, aux = ckpt.load_params(cfg.model_prefix, 1)
    # an absurd learning rate makes the logits overflow within a few updates
    with pytest.raises(fit.TrainingDiverged, match=r"at epoch 2 .*batch \d+.*m-0001\.params"):
        fit.fit(sym, *iters(), config(tmp_path, num_epochs=3, begin_epoch=1, arg_params=arg,
                                      aux_params=aux, lr_scheduler_args=None,
                                      optimizer_params={"learning_rate": 1e12, "momentum": 0.9}))
    assert open(cfg.model_prefix + "-0001.params", "rb").read() == good
    assert not os.path.exists(cfg.model_prefix + "-0002.params")


def test_parse_devices_and_lr_schedule():
    assert devices.parse_devices(cpus=2) == [mx.cpu(0), mx.cpu(1)]
    assert devices.parse_devices("0,1") == [mx.gpu(0), mx.gpu(1)]
    for bad in ("a", "0,,1", "0;1", "0,0"):
        with pytest.raises(ValueError, match="--gpus"):
            devices.parse_devices(bad)
    # ResNet-110 recipe: 0.01 for 400 updates, then 0.1, x0.1 after epochs 82 and 123
    sched = fit.make_lr_scheduler(0.1, 391, 164, "step", [82, 123], 0.1, warmup_iters=400,
                                  warmup_lr=0.01, warmup_mode="constant")
    assert sched(1) == pytest.approx(0.01) and sched(399) == pytest.approx(0.01)
    assert sched(401) == pytest.approx(0.1)
    assert sched(82 * 391 + 1) == pytest.approx(0.01)
    assert sched(123 * 391 + 1) == pytest.approx(0.001)
    cos = fit.make_lr_scheduler(0.1, 10, 10, "cosine", warmup_epochs=1, warmup_lr=0.0)
    assert cos(5) == pytest.approx(0.05) and cos(55) == pytest.approx(0.05, abs=0.01)
    assert cos(100) == pytest.approx(0.0, abs=1e-6)


def test_benchmark_times_the_steps_it_runs(monkeypatch):
    from mxcnn.train import engines
    calls, step = [], engines.ModuleEngine.step
    monkeypatch.setattr(engines.ModuleEngine, "step",
                        lambda self, data, label: (calls.append(time.perf_counter()),
                                                   step(self, data, label)))
    tic = time.perf_counter()
    speed = fit.benchmark(tiny_net(), 16, image_shape=(3, 8, 8), num_batches=3, warmup=1)
    wall = time.perf_counter() - tic
    assert len(calls) == 1 + 3  # the warm-up step, then the timed ones
    # the timed interval lies inside the call and contains the 2nd..4th step calls
    assert 3 * 16 / wall <= speed <= 3 * 16 / (calls[-1] - calls[1])


def test_gluon_on_two_contexts_keeps_batchnorm_statistics_as_module_does(tmp_path):
    """Gluon's first Trainer.step used to broadcast context 0's BatchNorm statistics while the
    first forward updated them (kept or lost at random), and saved context 0's alone."""
    sym = tiny_net()
    two = dict(contexts=[mx.cpu(0), mx.cpu(1)], kvstore="device")
    runs = [params_after(sym, config(tmp_path / name, engine=engine, **two))
            for name, engine in (("m", "module"), ("g1", "gluon"), ("g2", "gluon"), ("g3", "gluon"))]
    for other in runs[2:]:
        assert_params_close(runs[1][2], other[2], atol=0)  # reproducible
    assert_params_close(runs[0][1], runs[1][1], atol=2e-5)
    assert_params_close(runs[0][2], runs[1][2], atol=2e-5)  # the mean over devices, as Module


def test_nan_running_statistic_stops_before_a_checkpoint(tmp_path):
    """A NaN BatchNorm running variance leaves the training loss finite (training normalises
    with the batch's statistics) but poisons validation and the checkpoint: the guard checks
    the parameters themselves."""
    sym = tiny_net()
    arg, aux = fit.initial_params(sym, (16, 3, 8, 8))
    aux["bn1_moving_var"][1] = np.nan
    cfg = config(tmp_path, num_epochs=1, arg_params=arg, aux_params=aux)
    with pytest.raises(fit.TrainingDiverged, match=r"parameters became NaN/Inf \(bn1_moving_var\) "
                                                   r"at epoch 1 \(Epoch\[0\]\), batch 1;.*no checkpoint"):
        fit.fit(sym, *iters(), cfg)
    assert not [f for f in os.listdir(tmp_path) if ".params" in f or f.endswith(".json")]
    assert progress.read_log(cfg.model_prefix + "-log.jsonl") == []


def test_nonfinite_arrays_names_only_nonfinite_ones():
    from mxcnn.train import engines
    arrays = [("ok", mx.nd.ones((3, 3))), ("huge", mx.nd.ones((4,)) * 1e30),  # sum of squares: inf
              ("nan", mx.nd.array([1, np.nan])), ("inf", mx.nd.array([-np.inf])),
              ("other_ctx", mx.nd.array([np.nan], ctx=mx.cpu(1)))]
    assert engines.nonfinite_arrays(arrays) == ["inf", "nan", "other_ctx"]


@pytest.mark.parametrize("engine", fit.ENGINES)
def test_get_params_holds_the_last_steps_batchnorm_statistics(engine):
    """oneDNN's BatchNorm updates its moving statistics in the backward, a write MXNet's
    engine does not track: get_params used to copy them before the last update landed, so
    checkpoints held the statistics of one step earlier."""
    sym = tiny_net()
    shape = (16, 3, 8, 8)
    arg, aux = fit.initial_params(sym, shape)
    runner = fit.make_engine(engine, sym, [mx.cpu()], shape, (16,), arg, aux, "sgd",
                             {"learning_rate": 0.0})  # fixed weights: the same batch mean
    x, y = toy_data(16)
    data, label = mx.nd.array(x), mx.nd.array(y)
    runner.step(data, label)
    first = runner.get_params()[1]["bn1_moving_mean"].asnumpy()
    runner.step(data, label)
    second = runner.get_params()[1]["bn1_moving_mean"].asnumpy()
    assert np.abs(first).max() > 0  # the first step's update is there ...
    # ... and the second's: the same batch moves the mean 10% further towards its value
    np.testing.assert_allclose(second, first * 1.9, rtol=1e-4, atol=1e-6)
