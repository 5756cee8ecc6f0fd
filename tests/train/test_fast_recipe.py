"""The fast recipe's trainer features on tiny runs: weight EMA and lookahead (formula,
checkpoint, exact resume), test-time augmentation (mean of the views), the linear schedule,
BN-bias lr."""
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from mxcnn.inference import tta
from mxcnn.train import engines, fit
from mxcnn.train.ema import WeightEMA
from mxcnn.train.lookahead import Lookahead
from tests.train.cli_helpers import ROOT, SCRIPT, SIDE, base_args, env, make_records
from tests.train.engine_helpers import NUM_CLASSES, config, iters, tiny_net


def _numpy_params(engine):
    arg, aux = engine.live_params()
    return {k: v[0].asnumpy().copy() for k, v in list(arg.items()) + list(aux.items())}


@pytest.mark.parametrize("every", [1, 2])
def test_ema_update_matches_numpy(every):
    """w_ema = d_k * w_ema + (1 - d_k) * w after every `every`-th step, d_k = min(d, (1+k)/(10+k))."""
    sym, shape = tiny_net(), (16, 3, 8, 8)
    arg, aux = engines.initial_params(sym, shape)
    engine = engines.make_engine("module", sym, [mx.cpu()], shape, (16,), arg, aux, "nag",
                                 {"learning_rate": 0.2, "momentum": 0.9, "wd": 1e-3})
    average = WeightEMA(0.8, every).start(engine.live_params())
    expected = _numpy_params(engine)
    rs = np.random.RandomState(0)
    updates = 0
    for step in range(1, 7):
        engine.step(mx.nd.array(rs.randn(*shape)), mx.nd.array(rs.randint(0, NUM_CLASSES, 16)))
        average.step(engine.live_params())
        if step % every == 0:
            d = min(0.8, (1.0 + updates) / (10.0 + updates))
            live = _numpy_params(engine)
            expected = {k: d * expected[k] + (1 - d) * live[k] for k in expected}
            updates += 1
    got_arg, got_aux = average.params()
    assert average.updates == updates and average.steps == 6
    for name, value in list(got_arg.items()) + list(got_aux.items()):
        np.testing.assert_allclose(value.asnumpy(), expected[name], rtol=1e-5, atol=1e-6)
    assert "bn1_moving_mean" in got_aux  # running statistics are averaged too


def test_fit_saves_the_average_and_the_live_weights(tmp_path):
    train, val = iters()
    records = fit.fit(tiny_net(), train, val, config(tmp_path, num_epochs=1, ema_decay=0.5))
    prefix = str(tmp_path / "m")
    params, live = mx.nd.load(prefix + "-0001.params"), mx.nd.load(prefix + "-0001.live")
    state = json.load(open(prefix + "-0001.json"))
    assert set(params) == set(live) and state["ema"]["updates"] == 4
    assert not np.array_equal(params["arg:fc1_weight"].asnumpy(), live["arg:fc1_weight"].asnumpy())
    # the validation error in the log is the average's: evaluate those weights again
    arg = {k[4:]: v for k, v in params.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in params.items() if k.startswith("aux:")}
    engine = engines.make_engine("module", tiny_net(), [mx.cpu()], (16, 3, 8, 8), (16,), arg, aux,
                                 "sgd", {"learning_rate": 0.0})
    metrics = fit._evaluate(engine, val, fit.BatchMetrics())
    assert abs((1 - metrics.accuracy) - records[0]["val_error"]) < 1e-9


def test_tta_is_the_mean_of_the_augmented_predictions():
    rs = np.random.RandomState(0)
    batch = rs.randn(3, 2, 5, 6).astype(np.float32)
    weights = rs.randn(2 * 5 * 6, 4).astype(np.float32)

    def predict(data):  # any function of the whole image: softmax of a linear map
        logits = data.asnumpy().reshape(len(batch), -1) @ weights
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return mx.nd.array(e / e.sum(axis=1, keepdims=True))

    flip = batch[:, :, :, ::-1]
    down_right = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")[:, :, :5, :6]
    up_left = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")[:, :, 2:, 2:]
    assert np.array_equal(tta.shift(batch, 1, 1), down_right)
    assert np.array_equal(down_right[:, :, 1:, 1:], batch[:, :, :-1, :-1])
    views = [batch, down_right, up_left]
    views += [v[:, :, :, ::-1] for v in views]
    p = lambda v: predict(mx.nd.array(np.ascontiguousarray(v))).asnumpy()  # noqa: E731
    np.testing.assert_allclose(tta.predict(predict, mx.nd.array(batch), ("flip",)),
                               (p(batch) + p(flip)) / 2, rtol=1e-6)
    np.testing.assert_allclose(tta.predict(predict, mx.nd.array(batch), tta.parse("flip,translate")),
                               np.mean([p(v) for v in views], axis=0), rtol=1e-6)
    assert tta.parse("none") == () and tta.parse("translate,flip") == ("flip", "translate")
    with pytest.raises(ValueError, match="unknown view"):
        tta.parse("flip,rotate")


def test_linear_schedule_is_triangular():
    sched = fit.make_lr_scheduler(1.0, 10, 10, mode="linear", warmup_epochs=2, warmup_lr=0.2,
                                  final_lr=0.07)
    assert abs(sched(0) - 0.2) < 1e-9 and abs(sched(10) - 0.6) < 1e-9
    assert abs(sched(20) - 1.0) < 1e-9 and abs(sched(60) - (1.0 - 0.93 * 0.5)) < 1e-9
    assert abs(sched(100) - 0.07) < 1e-9


def test_bn_bias_lr_multiplier_reaches_the_optimizer():
    sym, shape = tiny_net(), (16, 3, 8, 8)
    arg, aux = engines.initial_params(sym, shape)
    for name in ("module", "gluon"):
        engine = engines.make_engine(name, sym, [mx.cpu()], shape, (16,), arg, aux, "sgd",
                                     {"learning_rate": 0.1, "wd": 1e-4})
        engine.scale_lr({"bn1_beta": 64.0})
        before = engine.live_params()[0]["bn1_beta"][0].asnumpy().copy()
        engine.step(mx.nd.ones(shape), mx.nd.zeros(16))
        after_beta = engine.live_params()[0]["bn1_beta"][0].asnumpy()
        # a second engine without the multiplier takes a 64x smaller step on the betas
        plain = engines.make_engine(name, sym, [mx.cpu()], shape, (16,), arg, aux, "sgd",
                                    {"learning_rate": 0.1, "wd": 1e-4})
        plain.step(mx.nd.ones(shape), mx.nd.zeros(16))
        plain_beta = plain.live_params()[0]["bn1_beta"][0].asnumpy()
        np.testing.assert_allclose(after_beta - before, 64 * (plain_beta - before), rtol=1e-4,
                                   atol=1e-7, err_msg=name)


def test_resume_with_ema_is_exact(tmp_path):
    records = make_records(str(tmp_path / "data"))
    extra = ["--num-epochs", "3", "--deterministic", "1", "--ema-decay", "0.7", "--ema-every", "2",
             "--tta", "flip", "--seed", "2"]
    straight, resumed = str(tmp_path / "a" / "m"), str(tmp_path / "b" / "m")

    def run(prefix, *more):
        out = subprocess.run([sys.executable, SCRIPT] + base_args(records, prefix, *extra, *more),
                             capture_output=True, text=True, env=env(), timeout=240, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stderr

    run(straight)
    first = [a if a != "3" else "1" for a in extra]
    subprocess.run([sys.executable, SCRIPT] + base_args(records, resumed, *first), check=True,
                   capture_output=True, env=env(), timeout=240, cwd=ROOT)
    assert "resumed after" in run(resumed, "--resume")
    for suffix in ("-0003.params", "-0003.live"):
        a, b = mx.nd.load(straight + suffix), mx.nd.load(resumed + suffix)
        assert set(a) == set(b)
        for key in a:
            assert np.array_equal(a[key].asnumpy(), b[key].asnumpy()), (suffix, key)
    sa, sb = (json.load(open(p + "-0003.json")) for p in (straight, resumed))
    assert sa["ema"] == sb["ema"] and sa["ema"]["steps"] == 18


def test_score_rec_tta_is_the_mean_over_the_views(tmp_path):
    """score.py --tta: top-1 of the mean probability over the views, computed here by hand."""
    from mxcnn.inference import score
    train, val = make_records(str(tmp_path / "data"), n_train=16, n_val=24)
    sym = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.flatten(mx.sym.var("data")),
                                                     num_hidden=4, name="fc1"), name="softmax")
    rs = np.random.RandomState(0)
    arg = {"fc1_weight": mx.nd.array(rs.randn(4, 3 * SIDE * SIDE) * 0.05),
           "fc1_bias": mx.nd.zeros(4)}
    mod = mx.mod.Module(sym)
    mod.bind([("data", (1, 3, SIDE, SIDE))], [("softmax_label", (1,))], for_training=False)
    mod.set_params(arg, {})
    prefix = str(tmp_path / "lin")
    mod.save_checkpoint(prefix, 1)
    got = score.score_rec(prefix, 1, val, batch_size=8, views=("flip", "translate"))
    from mxcnn.data import iterators
    _, it = iterators.get_rec_iters(None, val, 24, (3, SIDE, SIDE))
    batch = next(iter(it))
    x, labels = batch.data[0].asnumpy(), batch.label[0].asnumpy()
    w = arg["fc1_weight"].asnumpy()
    probs = []
    for view in tta.views(x, ("flip", "translate")):
        logits = view.reshape(len(x), -1) @ w.T
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    expected = (np.mean(probs, axis=0).argmax(axis=1) == labels).mean()
    plain = (probs[0].argmax(axis=1) == labels).mean()
    assert got["top-1"] == pytest.approx(expected) and got["samples"] == 24
    assert len(probs) == 6 and (expected != plain or np.abs(np.mean(probs, 0) - probs[0]).max() > 1e-3)


def _engine(sym, shape, contexts=None, engine="module", **kw):
    arg, aux = engines.initial_params(sym, shape)
    return engines.make_engine(engine, sym, list(contexts or [mx.cpu()]), shape, (shape[0],), arg, aux, "nag",
                               {"learning_rate": 0.2, "momentum": 0.9, "wd": 1e-3}, **kw)


def _batch(rs, shape):
    return mx.nd.array(rs.randn(*shape)), mx.nd.array(rs.randint(0, NUM_CLASSES, shape[0]))


def test_lookahead_pull_matches_numpy():
    """Every 2nd step: slow = a*slow + (1-a)*w, w = slow, a = 0.8 * (t/6)^3; the end: w = slow."""
    sym, shape = tiny_net(), (16, 3, 8, 8)
    engine = _engine(sym, shape)
    slow = Lookahead(2, 0.8, total_steps=6).start(engine.live_params())
    expected = _numpy_params(engine)
    rs = np.random.RandomState(0)
    for step in range(1, 7):
        engine.step(*_batch(rs, shape))
        live = _numpy_params(engine)
        assert slow.step(engine.live_params()) == (step % 2 == 0)
        if step % 2 == 0:
            a = 0.8 * (step / 6.0) ** 3
            expected = {k: a * expected[k] + (1 - a) * live[k] for k in expected}
            for name, value in _numpy_params(engine).items():  # the live weights jumped back
                np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
    engine.step(*_batch(rs, shape))
    slow.finish(engine.live_params())
    got_arg, got_aux = slow.params()
    for name, value in list(got_arg.items()) + list(got_aux.items()):
        np.testing.assert_allclose(value.asnumpy(), expected[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(_numpy_params(engine)[name], expected[name])
    assert "bn1_moving_mean" in got_aux and slow.state()["steps"] == 6


@pytest.mark.parametrize("engine_name", ["module", "gluon"])
def test_lookahead_weights_survive_a_multi_device_step(engine_name):
    """With two contexts a kvstore aggregates the gradients; the engine must update locally, or
    the kvstore's own copy of the weights would undo the lookahead's write at the next step."""
    sym, shape = tiny_net(batch_norm=False), (16, 3, 8, 8)
    engine = _engine(sym, shape, [mx.cpu(0), mx.cpu(1)], engine_name, kvstore="local",
                     local_updates=True)
    slow = Lookahead(1, 0.5, total_steps=10).start(engine.live_params())
    before = _numpy_params(engine)
    rs = np.random.RandomState(1)
    engine.step(*_batch(rs, shape))
    slow.pull(engine.live_params(), 1.0)  # the live weights back to the starting ones
    engine.optimizer.lr, engine.optimizer.momentum = 0.0, 0.0
    engine.step(*_batch(rs, shape))
    arg, _ = engine.live_params()
    for name, arrays in arg.items():
        for array in arrays:
            np.testing.assert_allclose(array.asnumpy(), before[name], rtol=1e-6, atol=1e-7,
                                       err_msg=name)


def test_fit_with_lookahead_ends_on_the_slow_weights(tmp_path):
    train, val = iters()
    fit.fit(tiny_net(), train, val, config(tmp_path, num_epochs=1, lookahead_every=3))
    prefix = str(tmp_path / "m")
    params, slow = mx.nd.load(prefix + "-0001.params"), mx.nd.load(prefix + "-0001.slow")
    state = json.load(open(prefix + "-0001.json"))
    assert state["lookahead"] == {"every": 3, "decay": pytest.approx(0.95 ** 5), "total": 4,
                                  "steps": 4}
    assert "m-0001.slow" in state["files"] and set(params) == set(slow)
    for key in params:
        assert np.array_equal(params[key].asnumpy(), slow[key].asnumpy()), key


def test_resume_with_lookahead_is_exact(tmp_path):
    """A run stopped after epoch 1 of 3 and resumed ends with the straight run's bytes."""
    records = make_records(str(tmp_path / "data"))
    extra = ["--num-epochs", "3", "--deterministic", "1", "--lookahead-every", "3",
             "--flip", "alternate", "--crop-pad-mode", "reflect", "--seed", "2"]
    straight, resumed = str(tmp_path / "a" / "m"), str(tmp_path / "b" / "m")
    args = base_args(records, straight, *extra)
    subprocess.run([sys.executable, SCRIPT] + args, check=True, capture_output=True, env=env(),
                   timeout=240, cwd=ROOT)
    os.makedirs(os.path.dirname(resumed))
    for name in os.listdir(os.path.dirname(straight)):  # what a run killed in epoch 2 leaves
        if not any(name.startswith("m-%04d." % e) for e in (2, 3)):
            shutil.copy(os.path.join(os.path.dirname(straight), name), os.path.dirname(resumed))
    out = subprocess.run([sys.executable, SCRIPT] + base_args(records, resumed, *extra)
                         + ["--resume"], capture_output=True, text=True, env=env(), timeout=240,
                         cwd=ROOT)
    assert out.returncode == 0 and "lookahead: every 3 step(s)" in out.stderr, out.stderr
    assert "resumed after" in out.stderr
    for suffix in ("-0003.params", "-0003.slow", "-0003.states"):
        a, b = mx.nd.load(straight + suffix), mx.nd.load(resumed + suffix)
        assert set(a) == set(b)
        for key in a:
            assert np.array_equal(a[key].asnumpy(), b[key].asnumpy()), (suffix, key)
