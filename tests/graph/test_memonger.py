"""graph.memonger: the mirroring plan keeps training exact while cutting executor memory."""
import json
import logging

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.graph import memonger

BATCH = 8
SHAPE = (BATCH, 3, 32, 32)


def preact(depth, tags=True):
    """Basic-unit PreAct ResNet (6n+2) from the registry, stage-tagged when ``tags``."""
    return symbols.get_symbol("preact_resnet", num_layers=depth, bottleneck=False, memonger=tags)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MXCNN_CACHE_DIR", str(tmp_path / "cache"))
    memonger._memory_cache.clear()
    yield
    memonger._memory_cache.clear()


@pytest.fixture(scope="module")
def net():
    return preact(32)


def _train_step(sym, arg_params, aux_params, batch):
    """One Module forward/backward/SGD step; returns (outputs, grads, params, aux) as numpy."""
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", SHAPE)], label_shapes=[("softmax_label", (BATCH,))])
    mod.set_params(arg_params, aux_params)
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1, "momentum": 0.9,
                                                          "wd": 1e-4})
    mod.forward_backward(batch)
    outputs = mod.get_outputs()[0].asnumpy()
    executor = mod._exec_group.execs[0]
    grads = {k: v.asnumpy() for k, v in executor.grad_dict.items() if v is not None}
    mod.update()
    args, aux = mod.get_params()
    return (outputs, grads, {k: v.asnumpy() for k, v in args.items()},
            {k: v.asnumpy() for k, v in aux.items()})


def test_plan_gives_identical_gradients_and_updates(net):
    planned = memonger.plan(net, data=SHAPE)
    assert memonger.mirrored_names(planned), "the plan mirrors nothing"
    assert planned.list_arguments() == net.list_arguments()

    rng = np.random.RandomState(0)
    arg_shapes, _, aux_shapes = net.infer_shape(data=SHAPE)
    arg_params = {n: mx.nd.array(rng.normal(0, 0.1, s)) for n, s in
                  zip(net.list_arguments(), arg_shapes) if n not in ("data", "softmax_label")}
    aux_params = {n: mx.nd.array(rng.uniform(0.5, 1.5, s)) for n, s in
                  zip(net.list_auxiliary_states(), aux_shapes)}
    batch = mx.io.DataBatch([mx.nd.array(rng.normal(0, 1, SHAPE))],
                            [mx.nd.array(rng.randint(0, 10, BATCH))])

    reference = _train_step(net, arg_params, aux_params, batch)
    result = _train_step(planned, arg_params, aux_params, batch)
    for what, ref, got in zip(("outputs", "grads", "params", "aux"), reference, result):
        if what == "outputs":
            ref, got = {"out": ref}, {"out": got}
        assert sorted(ref) == sorted(got)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5,
                                       err_msg="%s %s differ with the plan" % (what, name))
    # the step really changed the parameters, so equality above is not trivial
    assert any(not np.allclose(reference[2][n], arg_params[n].asnumpy()) for n in arg_params)


def test_plan_reduces_executor_memory_and_logs_it(net, caplog):
    with caplog.at_level(logging.INFO, logger="mxcnn.graph.memonger"):
        planned = memonger.plan(net, data=SHAPE)
    before = memonger.allocated_mb(net, data=SHAPE)
    after = memonger.allocated_mb(planned, data=SHAPE)
    assert after < 0.6 * before, (before, after)
    assert any("MB ->" in r.getMessage() for r in caplog.records)


def test_untagged_symbol_is_planned_over_every_node():
    net = preact(20, tags=False)
    planned = memonger.plan(net, cache_dir=False, data=SHAPE)
    assert memonger.allocated_mb(planned, data=SHAPE) < memonger.allocated_mb(net, data=SHAPE)


def test_second_call_hits_memory_then_disk_cache(net, tmp_path, monkeypatch):
    first = memonger.plan(net, data=SHAPE)
    files = list((tmp_path / "cache" / "memonger").glob("*.json"))
    assert len(files) == 1 and not list(files[0].parent.glob(".tmp-*"))

    def no_search(*args, **kwargs):
        raise AssertionError("planned again instead of using the cache")

    monkeypatch.setattr(memonger, "_search", no_search)
    assert memonger.plan(net, data=SHAPE).tojson() == first.tojson()      # in-process
    memonger._memory_cache.clear()
    assert memonger.plan(net, data=SHAPE).tojson() == first.tojson()      # from disk
    assert memonger.plan(first, data=SHAPE).tojson() == first.tojson()    # re-planning a plan
    with pytest.raises(AssertionError):                                   # other shapes: new plan
        memonger.plan(net, data=(4, 3, 32, 32))


def test_saved_plan_loads_in_plain_mxnet(net, tmp_path):
    planned = memonger.plan(net, data=SHAPE)
    path = str(tmp_path / "planned-symbol.json")
    planned.save(path)
    loaded = mx.sym.load(path)
    assert loaded.tojson() == planned.tojson()
    attrs = loaded.attr_dict()
    assert sum(a.get("__force_mirroring__") == "True" for a in attrs.values()) > 10
    # only attributes were added: the graph is the original one
    strip = lambda s: [(n["op"], n["name"], n["inputs"]) for n in json.loads(s.tojson())["nodes"]]
    assert strip(loaded) == strip(net)


@pytest.mark.parametrize("shapes, message", [
    ({}, "needs the input shapes"),
    ({"image": SHAPE}, "image"),
    ({"data": (BATCH, 3)}, "cannot infer"),
])
def test_bad_shapes_raise_a_clear_error(net, shapes, message):
    with pytest.raises(ValueError, match=message):
        memonger.plan(net, **shapes)


def test_missing_shape_is_named():
    data = mx.sym.Variable("data")
    extra = mx.sym.Variable("extra")
    sym = mx.sym.broadcast_add(mx.sym.FullyConnected(data, num_hidden=4, name="fc"), extra)
    with pytest.raises(ValueError, match="extra"):
        memonger.plan(sym, data=(2, 3))


# ------------------------------------------------------------------ the plan's device

def test_plan_is_measured_on_the_given_device_and_cached_per_device_type(net, tmp_path, monkeypatch):
    bound = []
    original = mx.sym.Symbol.simple_bind

    def spy(self, ctx, *args, **kwargs):
        bound.append(ctx)
        return original(self, ctx, *args, **kwargs)

    monkeypatch.setattr(mx.sym.Symbol, "simple_bind", spy)
    planned = memonger.plan(net, ctx=[mx.cpu(1), mx.cpu(2)], data=SHAPE)
    assert bound and set(bound) == {mx.cpu(1)}  # the first device of the job, never another
    assert memonger.mirrored_names(planned)
    entry = json.loads(next((tmp_path / "cache" / "memonger").glob("*.json")).read_text())
    assert entry["device"] == "cpu"
    # another cpu id is the same device type: served from the cache, nothing bound again
    bound.clear()
    memonger.plan(net, ctx=mx.cpu(0), data=SHAPE)
    assert bound == []
    # a GPU plan is not the CPU plan: it is measured on the GPU (none here: one clear error)
    with pytest.raises(ValueError, match=r"memonger cannot bind on gpu\(0\)") as err:
        memonger.plan(net, ctx=mx.gpu(0), data=SHAPE)
    assert isinstance(err.value, memonger.common.UserError) and "\n" not in str(err.value)
    assert bound == [mx.gpu(0)]
    key = memonger._cache_key(net.tojson(), {"data": SHAPE}, "cpu")
    assert key != memonger._cache_key(net.tojson(), {"data": SHAPE}, "gpu")


def test_device_argument_checks():
    assert memonger.device(None) == mx.cpu()
    assert memonger.device([mx.gpu(1), mx.gpu(0)]) == mx.gpu(1)
    for bad in ([mx.cpu(0), mx.gpu(0)], [], "gpu0"):
        with pytest.raises(ValueError, match="memonger"):
            memonger.device(bad)


def test_out_of_device_memory_counts_as_infinite(net, monkeypatch):
    # On a GPU, binding allocates: an unplanned graph that does not fit is "inf", and any
    # plan that fits beats it (simulated: the unplanned bind runs out of memory).
    original = mx.sym.Symbol.simple_bind

    def small_device(self, ctx, *args, **kwargs):
        if not memonger.mirrored_names(self):
            raise mx.base.MXNetError("cudaMalloc retry failed: out of memory")
        return original(self, ctx, *args, **kwargs)

    monkeypatch.setattr(mx.sym.Symbol, "simple_bind", small_device)
    assert memonger.allocated_mb(net, data=SHAPE) == float("inf")
    planned = memonger.plan(net, cache_dir=False, data=SHAPE)
    assert memonger.mirrored_names(planned)
