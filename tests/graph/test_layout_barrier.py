"""graph.layout_barrier: identity barriers around narrow grouped convolutions keep the maths."""
import json

import mxnet as mx
import numpy as np
import pytest

import symbols
from graph import fusion, layout_barrier
from train import fit

SHAPE = (4, 3, 32, 32)


def _nodes(sym):
    return json.loads(sym.tojson())["nodes"]


def _step(sym, arg_params, aux_params, data, label, dtype="float32"):
    exe = sym.simple_bind(mx.cpu(), data=data.shape, softmax_label=label.shape,
                          type_dict={"data": dtype})
    for name, value in list(arg_params.items()) + list(aux_params.items()):
        (exe.arg_dict[name] if name in exe.arg_dict else exe.aux_dict[name])[:] = value.astype(dtype)
    exe.arg_dict["data"][:] = data.astype(dtype)
    exe.arg_dict["softmax_label"][:] = label.astype(dtype)
    exe.forward(is_train=True)
    exe.backward()
    return (exe.outputs[0].asnumpy(),
            {n: exe.grad_dict[n].asnumpy().astype("f8") for n in arg_params})


CASES = [  # (network, options, convolutions that get barriers)
    ("resnext", dict(num_layers=29, cardinality=8, bottleneck_width=4), 6),   # 4 and 8 per group
    ("se_resnext", dict(num_layers=29, cardinality=2, bottleneck_width=24), 3),  # 24 (48, 96 fit)
    ("resnext", dict(num_layers=29, cardinality=2, bottleneck_width=16), 0),  # 16, 32, 64
    ("mobilenet", dict(multiplier=0.25), 0),                                  # depthwise
]


@pytest.mark.parametrize("network,options,expected", CASES,
                         ids=["%s-%s" % (c[0], c[1].get("bottleneck_width", "dw")) for c in CASES])
def test_barriers_change_nothing_but_the_layout(network, options, expected):
    sym = symbols.get_symbol(network, num_classes=10, **options)
    barred, count = layout_barrier.plain_around_narrow_groups(sym)
    assert count == expected
    if not expected:
        assert barred is sym
        return
    assert barred.list_arguments() == sym.list_arguments()
    assert barred.list_auxiliary_states() == sym.list_auxiliary_states()
    assert barred.list_outputs() == sym.list_outputs()
    clips = [n["name"] for n in _nodes(barred) if n["op"] == "clip"]
    grouped = [n["name"] for n in _nodes(barred) if n["name"].endswith("_grouped")]
    assert len(clips) == 2 * count and len(grouped) == count
    assert {g[:-len("_grouped")] for g in grouped} <= set(clips)  # the outer barrier has its name
    assert set(sym.get_internals().list_outputs()) <= set(barred.get_internals().list_outputs())
    mx.random.seed(5)
    arg_params, aux_params = fit.initial_params(sym, SHAPE)
    data = mx.nd.random.uniform(-1, 1, SHAPE)
    label = mx.nd.array(np.arange(SHAPE[0]) % 10)
    out_ref, grads_ref = _step(sym, arg_params, aux_params, data, label)
    out, grads = _step(barred, arg_params, aux_params, data, label)
    _, grads64 = _step(sym, arg_params, aux_params, data, label, "float64")
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-6)
    for name in grads_ref:
        # 1e-4 of the gradient, or 3x today's float32 error against float64 (the reference
        # BatchNorm kernels today's graph runs sum in another order than the JIT ones)
        today = np.abs(grads_ref[name] - grads64[name]).max()
        tolerance = max(1e-4 * (np.abs(grads_ref[name]).max() + 1e-12), 3 * today)
        assert np.abs(grads[name] - grads_ref[name]).max() <= tolerance, name


def test_barrier_is_the_identity_for_every_float():
    x = mx.sym.var("x")
    conv = mx.sym.Convolution(x, num_filter=8, num_group=2, kernel=(1, 1), no_bias=True, name="g")
    barred, count = layout_barrier.plain_around_narrow_groups(conv)
    assert count == 1
    clip = [n for n in _nodes(barred) if n["name"] == "g_plain_in"][0]
    probe = mx.sym.clip(mx.sym.var("v"), a_min=float(clip["attrs"]["a_min"]),
                        a_max=float(clip["attrs"]["a_max"]))
    values = mx.nd.array([1.5, -3e38, 3e38, float("inf"), -float("inf"), float("nan")])
    out = probe.eval(v=values)[0].asnumpy()
    np.testing.assert_array_equal(out, values.asnumpy())  # NaN == NaN for assert_array_equal


@pytest.mark.skipif(not fusion.available(), reason="needs MXNet with oneDNN")
def test_trainer_binds_the_barriers_on_onednn_cpus():
    sym = symbols.get_symbol("resnext", num_classes=10, num_layers=29, cardinality=8,
                             bottleneck_width=4)
    ops = [n["op"] for n in _nodes(fit.training_graph(sym, [mx.cpu()], SHAPE))]
    assert ops.count("clip") == 12
    assert fit.training_graph(sym, [mx.gpu(0)], SHAPE) is sym
