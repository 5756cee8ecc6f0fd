"""train/opt_states.py: optimizer states saved on one device layout load on another.

cpu(0)/cpu(1) stand in for GPUs: MXNet keys and places the states per device the same way.
"""
import os

import mxnet as mx
import numpy as np
import pytest

from mxcnn.train import opt_states

BATCH = 4


def _net():
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), pad=(1, 1), name="c1")
    x = mx.sym.FullyConnected(mx.sym.flatten(mx.sym.Activation(x, act_type="relu")), num_hidden=3,
                              name="fc")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def _batches(count, seed=0):
    rng = np.random.RandomState(seed)
    return [mx.io.DataBatch([mx.nd.array(rng.rand(BATCH, 2, 5, 5))],
                            [mx.nd.array(rng.randint(0, 3, BATCH))]) for _ in range(count)]


def _module(contexts, params=None, update_on_kvstore=True, monkeypatch=None):
    if monkeypatch is not None:
        if update_on_kvstore:
            monkeypatch.delenv("MXNET_UPDATE_ON_KVSTORE", raising=False)
        else:
            monkeypatch.setenv("MXNET_UPDATE_ON_KVSTORE", "0")  # the dist_sync layout
    mod = mx.mod.Module(_net(), context=contexts)
    mod.bind([("data", (BATCH, 2, 5, 5))], [("softmax_label", (BATCH,))])
    if params is None:
        mx.random.seed(3)
        mod.init_params(mx.init.Xavier())
    else:
        mod.set_params(*params)
    mod.init_optimizer(kvstore="local", optimizer="sgd",
                       optimizer_params={"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-3,
                                         "rescale_grad": 1.0 / BATCH})
    return mod


def _train(mod, batches):
    for batch in batches:
        mod.forward_backward(batch)
        mod.update()


def _params(mod):
    args, aux = mod.get_params()
    return {k: v.asnumpy() for k, v in list(args.items()) + list(aux.items())}


LAYOUTS = [([mx.cpu(0), mx.cpu(1)], True), ([mx.cpu(0), mx.cpu(1)], False), ([mx.cpu(0)], True)]


@pytest.mark.parametrize("saved_on", LAYOUTS, ids=["2dev-kvstore", "2dev-worker", "1dev"])
@pytest.mark.parametrize("loaded_on", LAYOUTS, ids=["2dev-kvstore", "2dev-worker", "1dev"])
def test_states_move_between_device_layouts(tmp_path, monkeypatch, saved_on, loaded_on):
    before, after = _batches(3, seed=1), _batches(2, seed=2)
    first = _module(saved_on[0], update_on_kvstore=saved_on[1], monkeypatch=monkeypatch)
    _train(first, before)
    path = str(tmp_path / "m.states")
    assert opt_states.save(path, first, "sgd") and opt_states.is_own_format(path)
    saved = opt_states.named_states(first)
    assert sorted(saved) == ["c1_bias", "c1_weight", "fc_bias", "fc_weight"]
    for name, state in mx.nd.load(path).items():  # every array is on the CPU
        assert state.context == mx.cpu(0), name

    second = _module(loaded_on[0], params=first.get_params(), update_on_kvstore=loaded_on[1],
                     monkeypatch=monkeypatch)
    states, meta = opt_states.load(path)
    assert meta["optimizer"] == "sgd"
    restored, missing = opt_states.load_into(second, states)
    assert sorted(restored) == sorted(saved) and missing == []
    for name, state in opt_states.named_states(second).items():
        np.testing.assert_array_equal(state.asnumpy(), saved[name].asnumpy())
        assert np.abs(state.asnumpy()).max() > 0  # real momentum, not zeros
    # continuing both gives the same weights: the momentum really was restored
    _train(first, after)
    _train(second, after)
    for name, value in _params(first).items():
        np.testing.assert_allclose(_params(second)[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_without_the_states_training_differs(tmp_path, monkeypatch):
    # the check above can fail: a fresh optimizer (momentum zero) gives other weights
    first = _module([mx.cpu(0)], monkeypatch=monkeypatch)
    _train(first, _batches(3, seed=1))
    second = _module([mx.cpu(0), mx.cpu(1)], params=first.get_params(), monkeypatch=monkeypatch)
    _train(first, _batches(2, seed=2))
    _train(second, _batches(2, seed=2))
    assert not np.allclose(_params(first)["fc_weight"], _params(second)["fc_weight"])


def test_gluon_trainer_states_move_between_layouts(tmp_path):
    def trainer_on(contexts, init=None):
        net = mx.gluon.nn.Dense(3, in_units=5, prefix="fc_")  # names as the engine has them
        net.initialize(mx.init.Constant(0.1), ctx=contexts)
        trainer = mx.gluon.Trainer(net.collect_params(), "sgd",
                                   {"learning_rate": 0.1, "momentum": 0.9},
                                   kvstore="device" if len(contexts) > 1 else None)
        return net, trainer

    def step(net, trainer, contexts, seed):
        rng = np.random.RandomState(seed)
        x = rng.rand(4 * len(contexts), 5)
        parts = np.split(x, len(contexts))
        with mx.autograd.record():
            losses = [net(mx.nd.array(p, ctx=c)).sum() for p, c in zip(parts, contexts)]
        for loss in losses:
            loss.backward()
        trainer.step(4 * len(contexts))

    two, one = [mx.cpu(0), mx.cpu(1)], [mx.cpu(0)]
    net2, trainer2 = trainer_on(two)
    step(net2, trainer2, two, 0)
    path = str(tmp_path / "g.states")
    assert opt_states.save(path, trainer2, "sgd")
    saved = opt_states.named_states(trainer2)
    net1, trainer1 = trainer_on(one)
    states, _ = opt_states.load(path)
    restored, missing = opt_states.load_into(trainer1, states)
    assert not missing and len(restored) == 2
    for name, state in opt_states.named_states(trainer1).items():
        np.testing.assert_array_equal(state.asnumpy(), saved[name].asnumpy())


def test_pickled_mxnet_states_are_not_ours(tmp_path, monkeypatch):
    mod = _module([mx.cpu(0)], monkeypatch=monkeypatch)
    _train(mod, _batches(1))
    path = str(tmp_path / "mxnet.states")
    mod.save_optimizer_states(path)
    assert os.path.getsize(path) > 0 and not opt_states.is_own_format(path)


def _engine(contexts, optimizer="sgd"):
    from mxcnn.train import engines
    sym = _net()
    data, label = (BATCH, 2, 5, 5), (BATCH,)
    mx.random.seed(3)
    arg, aux = engines.initial_params(sym, data, label)
    params = {"learning_rate": 0.1}
    if optimizer == "sgd":
        params["momentum"] = 0.9
    return engines.ModuleEngine(sym, contexts, data, label, arg, aux, optimizer, params, "local")


def test_engine_says_whether_momentum_was_restored(tmp_path):
    from mxcnn.train import engines
    first = _engine([mx.cpu(0), mx.cpu(1)])
    for batch in _batches(2):
        first.step(batch.data[0], batch.label[0])
    path = str(tmp_path / "e.states")
    first.save_states(path)
    assert "restored from %s (4 parameters, onto 1 device(s))" % path in _engine(
        [mx.cpu(0)]).load_states(path)
    message = _engine([mx.cpu(0)], optimizer="adam").load_states(path)
    assert message.startswith("optimizer state NOT restored") and "holds sgd state" in message
    # the optimizer on dist servers (dist_async): nothing can be loaded, and the line says so
    on_servers = _engine([mx.cpu(0), mx.cpu(1)])
    on_servers.mod._kvstore._updater = None  # what a dist kvstore with update_on_kvstore has
    message = on_servers.load_states(path)
    assert "NOT restored" in message and "servers" in message
    assert isinstance(engines.ModuleEngine.load_states(first, path), str)


def test_job_explains_a_missing_states_file(tmp_path):
    from mxcnn.train import job as jobmod
    fake = type("J", (), {})()
    fake.engine, fake.contexts = "module", [mx.cpu(0)]
    fake.state = {"kvstore": "dist_async"}
    assert jobmod._states_to_restore(fake, str(tmp_path / "none.states")) == (
        None, "the optimizer ran on the servers of --kv-store dist_async, which a worker cannot save")
    fake.state = {"kvstore": "device"}
    assert jobmod._states_to_restore(fake, str(tmp_path / "none.states"))[1] == "no .states file was saved"
    mod = _module([mx.cpu(0)])
    _train(mod, _batches(1))
    legacy = str(tmp_path / "legacy.states")
    mod.save_optimizer_states(legacy)
    fake.state = {"engine": "module", "num_devices": 2}
    states, why = jobmod._states_to_restore(fake, legacy)
    assert states is None and "MXNet's own format" in why
    ours = str(tmp_path / "ours.states")
    opt_states.save(ours, mod, "sgd")
    assert jobmod._states_to_restore(fake, ours) == (ours, None)
