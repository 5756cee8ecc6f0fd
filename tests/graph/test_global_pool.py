"""graph.global_pool: global pooling as MXNet reductions keeps interface, values, gradients."""
import json

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.graph import fusion, global_pool, memonger, training
from tests.graph.graph_helpers import ops

BATCH = 4
SHAPE = (BATCH, 3, 32, 32)


CASES = [  # (network, options, global average pools)
    ("resnet", dict(num_layers=20), 1),
    ("se_resnet", dict(num_layers=20), 10),     # 9 squeeze pools + the classifier's
    ("preact_resnet", dict(num_layers=20), 1),
    ("resnext", dict(num_layers=29, cardinality=2, bottleneck_width=16), 1),
    ("densenet", dict(num_layers=40, bottleneck=True), 1),
    ("mobilenet", dict(multiplier=0.25), 1),
    ("vgg", dict(num_layers=11, batch_norm=True), 1),
    ("airbench", dict(widths=(16, 32, 32)), 1),  # a global max pool
]


@pytest.mark.parametrize("network,options,expected", CASES, ids=[c[0] for c in CASES])
def test_rewritten_training_step_matches(network, options, expected, same_training_step):
    sym = symbols.get_symbol(network, num_classes=10, **options)
    rewritten, count = global_pool.reduce_global_pools(sym, data=SHAPE)
    assert count == expected
    assert rewritten.list_arguments() == sym.list_arguments()
    assert rewritten.list_auxiliary_states() == sym.list_auxiliary_states()
    assert rewritten.list_outputs() == sym.list_outputs()
    added = ops(rewritten).count("mean") + ops(rewritten).count("pick")
    assert added == ops(sym).count("mean") + ops(sym).count("pick") + count
    assert "Pooling" not in [n["op"] for n in json.loads(rewritten.tojson())["nodes"]
                             if n.get("attrs", {}).get("global_pool") == "True"]
    internals = rewritten.get_internals().list_outputs()
    assert all(name in internals for name in sym.get_internals().list_outputs())  # same names
    same_training_step(sym, rewritten, SHAPE, seed=3)


def _pools():
    x = mx.sym.var("data")
    a = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), pool_type="avg", name="gavg")
    b = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), pool_type="max", name="gmax")
    c = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), name="gdefault")  # max by default
    d = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="avg", name="avg2")
    return mx.sym.Group([a, b, c, d])


def test_only_global_pools_over_4d_inputs_change():
    sym = _pools()
    rewritten, count = global_pool.reduce_global_pools(sym, data=(2, 3, 8, 8))
    assert count == 3
    nodes = {node["name"]: node for node in json.loads(rewritten.tojson())["nodes"]}
    assert nodes["gavg"]["op"] == "mean"
    assert nodes["gmax"]["op"] == nodes["gdefault"]["op"] == "Reshape"
    assert nodes["gmax_pick"]["op"] == "pick" and nodes["avg2"]["op"] == "Pooling"
    x = mx.nd.random.uniform(shape=(2, 3, 8, 8))
    for new, old in zip(rewritten.eval(data=x), sym.eval(data=x)):
        np.testing.assert_allclose(new.asnumpy(), old.asnumpy(), rtol=1e-6)
    one_d = mx.sym.Pooling(mx.sym.var("data"), global_pool=True, kernel=(1,), pool_type="avg")
    assert global_pool.reduce_global_pools(one_d, data=(2, 3, 8)) == (one_d, 0)
    assert global_pool.reduce_global_pools(sym) == (sym, 0)  # no shapes: left alone
    assert global_pool.reduce_global_pools(sym, data=(2, 3))[1] == 0  # shapes that do not fit


def test_max_gradient_goes_to_the_first_maximum_as_the_pooling_does():
    x = mx.sym.var("data")
    sym = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), pool_type="max", name="gmax")
    rewritten, _ = global_pool.reduce_global_pools(sym, data=(1, 2, 2, 2))
    value = mx.nd.array([[[[1, 3], [3, 0]], [[2, 2], [2, 2]]]])  # ties in both channels
    grads = []
    for graph in (sym, rewritten):
        exe = graph.simple_bind(mx.cpu(), data=value.shape)
        exe.arg_dict["data"][:] = value
        exe.forward(is_train=True)
        exe.backward(mx.nd.ones((1, 2, 1, 1)))
        grads.append(exe.grad_dict["data"].asnumpy())
    np.testing.assert_array_equal(grads[1], grads[0])
    assert grads[0].sum() == 2  # one element per channel, not every tied maximum


def test_mirror_marks_survive(tmp_path, monkeypatch):
    monkeypatch.setenv("MXCNN_CACHE_DIR", str(tmp_path))
    sym = symbols.get_symbol("se_resnet", num_classes=10, num_layers=20, memonger=True)
    planned = memonger.plan(sym, data=(8, 3, 32, 32))
    rewritten, count = global_pool.reduce_global_pools(planned, data=(8, 3, 32, 32))
    assert count == 10
    before = {n["name"]: n.get("attrs", {}) for n in json.loads(planned.tojson())["nodes"]}
    for node in json.loads(rewritten.tojson())["nodes"]:
        if node["op"] == "mean":
            kept = {k: v for k, v in before[node["name"]].items() if k.startswith("__")}
            assert kept.items() <= node["attrs"].items()
    assert any(memonger.MIRROR_ATTR in n.get("attrs", {})
               for n in json.loads(rewritten.tojson())["nodes"] if n["op"] == "mean")


@pytest.mark.skipif(not fusion.available(), reason="needs MXNet with oneDNN")
def test_trainer_rewrites_on_onednn_cpus_only():
    sym = symbols.get_symbol("resnet", num_classes=10, num_layers=8)
    bound = training.training_graph(sym, [mx.cpu()], SHAPE)
    assert "mean" in ops(bound) and fusion.FUSED_OP in ops(bound)
    unfused = training.training_graph(sym, [mx.cpu()], SHAPE, fuse=False)
    assert "mean" in ops(unfused) and fusion.FUSED_OP not in ops(unfused)
    # a GPU context trains the symbol as built (cuDNN's pooling has no such slow path);
    # building the graph needs no GPU
    assert training.training_graph(sym, [mx.gpu(0)], SHAPE) is sym


@pytest.mark.skipif(not fusion.available(), reason="needs MXNet with oneDNN")
def test_each_rewrite_can_be_left_out():
    sym = symbols.get_symbol("resnet", num_classes=10, num_layers=8)
    assert training.training_graph(sym, [mx.cpu()], SHAPE, rewrites=()) is sym
    pooled = ops(training.training_graph(sym, [mx.cpu()], SHAPE, rewrites=("global_pool",)))
    assert "mean" in pooled and fusion.FUSED_OP not in pooled
    fused = ops(training.training_graph(sym, [mx.cpu()], SHAPE, rewrites=("fusion",)))
    assert "mean" not in fused and fusion.FUSED_OP in fused
    with pytest.raises(ValueError, match="unknown graph rewrite.*choose from global_pool"):
        training.training_graph(sym, [mx.cpu()], SHAPE, rewrites=("speed",))
