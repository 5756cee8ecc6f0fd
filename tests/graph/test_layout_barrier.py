"""graph.layout_barrier: identity barriers around narrow grouped convolutions keep the maths."""

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.graph import fusion, layout_barrier, training
from tests.graph.graph_helpers import nodes

SHAPE = (4, 3, 32, 32)


CASES = [  # (network, options, convolutions that get barriers)
    ("resnext", dict(num_layers=29, cardinality=8, bottleneck_width=4), 6),   # 4 and 8 per group
    ("se_resnext", dict(num_layers=29, cardinality=2, bottleneck_width=24), 3),  # 24 (48, 96 fit)
    ("resnext", dict(num_layers=29, cardinality=2, bottleneck_width=16), 0),  # 16, 32, 64
    ("mobilenet", dict(multiplier=0.25), 0),                                  # depthwise
]


@pytest.mark.parametrize("network,options,expected", CASES,
                         ids=["%s-%s" % (c[0], c[1].get("bottleneck_width", "dw")) for c in CASES])
def test_barriers_change_nothing_but_the_layout(network, options, expected, same_training_step):
    sym = symbols.get_symbol(network, num_classes=10, **options)
    barred, count = layout_barrier.plain_around_narrow_groups(sym)
    assert count == expected
    if not expected:
        assert barred is sym
        return
    assert barred.list_arguments() == sym.list_arguments()
    assert barred.list_auxiliary_states() == sym.list_auxiliary_states()
    assert barred.list_outputs() == sym.list_outputs()
    clips = [n["name"] for n in nodes(barred, keep_amp_casts=False) if n["op"] == "clip"]
    grouped = [n["name"] for n in nodes(barred, keep_amp_casts=False) if n["name"].endswith("_grouped")]
    assert len(clips) == 2 * count and len(grouped) == count
    assert {g[:-len("_grouped")] for g in grouped} <= set(clips)  # the outer barrier has its name
    assert set(sym.get_internals().list_outputs()) <= set(barred.get_internals().list_outputs())
    same_training_step(sym, barred, SHAPE, seed=5)


def test_barrier_is_the_identity_for_every_float():
    x = mx.sym.var("x")
    conv = mx.sym.Convolution(x, num_filter=8, num_group=2, kernel=(1, 1), no_bias=True, name="g")
    barred, count = layout_barrier.plain_around_narrow_groups(conv)
    assert count == 1
    clip = [n for n in nodes(barred, keep_amp_casts=False) if n["name"] == "g_plain_in"][0]
    probe = mx.sym.clip(mx.sym.var("v"), a_min=float(clip["attrs"]["a_min"]),
                        a_max=float(clip["attrs"]["a_max"]))
    values = mx.nd.array([1.5, -3e38, 3e38, float("inf"), -float("inf"), float("nan")])
    out = probe.eval(v=values)[0].asnumpy()
    np.testing.assert_array_equal(out, values.asnumpy())  # NaN == NaN for assert_array_equal


@pytest.mark.skipif(not fusion.available(), reason="needs MXNet with oneDNN")
def test_trainer_binds_the_barriers_on_onednn_cpus():
    sym = symbols.get_symbol("resnext", num_classes=10, num_layers=29, cardinality=8,
                             bottleneck_width=4)
    ops = [n["op"] for n in nodes(training.training_graph(sym, [mx.cpu()], SHAPE), keep_amp_casts=False)]
    assert ops.count("clip") == 12
    assert training.training_graph(sym, [mx.gpu(0)], SHAPE) is sym
