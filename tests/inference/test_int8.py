"""The fused float32 and the int8 inference graphs against the plain float32 graph, every family.

Networks: tests/inference/int8_helpers.py (random weights, BatchNorm statistics from data).
The CIFAR layouts run by default; the ImageNet layouts and the larger Inception/GoogLeNet/
ResNeXt graphs are marked slow.
"""

import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.graph import onednn_inference
from mxcnn.inference.predict import bind_inference
from mxcnn.inference.quantize import quantize_symbol
from tests.inference import int8_helpers as helpers

BATCH = 8
#: Heavier graphs (over ~10 s each on 2 busy cores): run with the slow tests.
SLOW = ("googlenet", "resnext", "se_resnext", "inception_v3", "inception_v4", "inception_resnet_v2")
#: int8 logits may differ from float32 by this fraction of the largest logit (measured: at most
#: 0.055 on the CIFAR cases, 0.19 on ResNet-18 ImageNet; broken graphs 0.29-0.82).
INT8_TOLERANCE = {"cifar": 0.12, "imagenet": 0.25}


def _params(cases, layout):
    marks = []
    params = []
    for case in cases:
        marks = [pytest.mark.slow] if layout == "imagenet" or case[0] in SLOW else []
        params.append(pytest.param(case, layout, id=helpers.case_id(case), marks=marks))
    return params


CASES = _params(helpers.CIFAR_CASES, "cifar") + _params(helpers.IMAGENET_CASES, "imagenet")


def test_cases_cover_every_registered_family():
    covered = {case[0] for case in helpers.CIFAR_CASES + helpers.IMAGENET_CASES}
    assert covered == set(symbols.list_networks())


@pytest.mark.parametrize("case, layout", CASES)
def test_fused_graph_computes_the_unfused_logits(case, layout):
    sym, args, auxs = helpers.build_case(case)
    logits = helpers.logits_of(sym)
    shape = (BATCH,) + case[2]
    images = helpers.smooth_images(BATCH, case[2], 7)
    plain = helpers.forward(bind_inference(logits, "data", shape, args, auxs, fuse=False), images)
    fused = helpers.forward(bind_inference(logits, "data", shape, args, auxs), images)
    assert np.abs(fused - plain).max() <= 1e-4 * max(1.0, np.abs(plain).max())
    assert (fused.argmax(1) == plain.argmax(1)).all()


@pytest.mark.parametrize("case, layout", CASES)
def test_int8_graph_agrees_with_float32(case, layout):
    sym, args, auxs = helpers.build_case(case)
    logits = helpers.logits_of(sym)
    shape = (BATCH * 2,) + case[2]
    images = helpers.smooth_images(BATCH * 2, case[2], 7)
    qsym, qargs, qauxs, info = quantize_symbol(
        logits, args, auxs, helpers.smooth_images(32, case[2], 3), batch_size=16
    )
    plain = helpers.forward(bind_inference(logits, "data", shape, args, auxs, fuse=False), images)
    int8 = helpers.forward(bind_inference(qsym, "data", shape, qargs, qauxs), images)
    assert onednn_inference.is_partitioned(qsym)
    assert np.abs(int8 - plain).max() <= INT8_TOLERANCE[layout] * np.abs(plain).max()
    assert (int8.argmax(1) == plain.argmax(1)).mean() >= 0.75


def test_a_gelu_fused_into_a_quantized_convolution_is_wrong_and_is_cut(monkeypatch):
    """MXNet's int8 convolution applies a fused GELU to its requantized output: on airbench
    the logits go 0.44 of their size off without the cut, 0.06 with it."""
    case = ("airbench", {"widths": (16, 32, 32)}, (3, 32, 32))
    sym, args, auxs = helpers.build_case(case)
    logits = helpers.logits_of(sym)
    shape = (BATCH * 2,) + case[2]
    images = helpers.smooth_images(BATCH * 2, case[2], 7)
    plain = helpers.forward(bind_inference(logits, "data", shape, args, auxs, fuse=False), images)
    calib = helpers.smooth_images(32, case[2], 3)
    qsym, qargs, qauxs, info = quantize_symbol(logits, args, auxs, calib, batch_size=16)
    assert {"whiten_conv", "block1_bn1", "block3_bn2"} <= set(info["cut"])
    guarded = helpers.forward(bind_inference(qsym, "data", shape, qargs, qauxs), images)
    monkeypatch.setattr(onednn_inference, "guard_int8_activations", lambda s: (s, []))
    qsym, qargs, qauxs, _ = quantize_symbol(logits, args, auxs, calib, batch_size=16)
    unguarded = helpers.forward(bind_inference(qsym, "data", shape, qargs, qauxs), images)
    size = np.abs(plain).max()
    assert np.abs(unguarded - plain).max() > 0.25 * size
    assert np.abs(guarded - plain).max() < INT8_TOLERANCE["cifar"] * size


def test_preact_cifar_stem_is_the_pattern_the_guard_cuts():
    """Without the guard MXNet's fusion feeds the shortcut the stem's normalised output."""
    import mxnet as mx

    case = ("preact_resnet", {"num_layers": 20}, (3, 32, 32))
    sym, args, auxs = helpers.build_case(case)
    logits = helpers.logits_of(sym)
    assert onednn_inference.fusion_escapes(logits) == [("stem_conv", ["stage1_unit1_add"])]
    guarded, cut = onednn_inference.guard_fusion(logits)
    assert cut == ["stem_conv"]
    for backend in (onednn_inference.FUSION_BACKEND, onednn_inference.QUANTIZE_BACKEND):
        assert onednn_inference.fusion_escapes(guarded, backend) == []
    shape = (BATCH,) + case[2]
    images = helpers.smooth_images(BATCH, case[2], 7)
    plain = helpers.forward(bind_inference(logits, "data", shape, args, auxs, fuse=False), images)
    module = mx.mod.Module(logits, label_names=None)  # MXNet's own fused bind, unguarded
    module.bind([("data", shape)], for_training=False)
    module.set_params(args, auxs)
    assert np.abs(helpers.forward(module, images) - plain).max() > 1e-2 * np.abs(plain).max()


def _grouped_net(groups, width):
    import mxnet as mx

    x = mx.sym.var("data")
    x = mx.sym.Activation(
        mx.sym.BatchNorm(
            mx.sym.Convolution(x, num_filter=groups * width, kernel=(1, 1), no_bias=True, name="pre"),
            fix_gamma=False,
            name="bn0",
        ),
        act_type="relu",
    )
    x = mx.sym.Convolution(
        x,
        num_filter=groups * width,
        num_group=groups,
        kernel=(3, 3),
        pad=(1, 1),
        no_bias=True,
        name="grouped",
    )
    x = mx.sym.Activation(mx.sym.BatchNorm(x, fix_gamma=False, name="bn1"), act_type="relu")
    return mx.sym.Convolution(x, num_filter=16, kernel=(1, 1), no_bias=True, name="post")


@pytest.mark.parametrize("groups, width, wrong", [(8, 16, True), (64, 1, False)])
def test_quantized_grouped_convolutions_are_wrong_and_stay_float32(monkeypatch, groups, width, wrong):
    """MXNet 1.9.1's int8 grouped convolution (not depthwise) is wrong: the reason the
    quantizer keeps grouped convolutions in float32.  Depthwise ones are right and quantized."""
    sym = _grouped_net(groups, width)
    shape = (8, 16, 8, 8)
    args, auxs = helpers.random_params(sym, shape[1:])
    images = np.random.RandomState(0).randn(*shape).astype(np.float32)
    plain = helpers.forward(bind_inference(sym, "data", shape, args, auxs, fuse=False), images)
    assert onednn_inference.grouped_convolutions(sym, data=shape) == (["grouped"] if wrong else [])
    qsym, qargs, qauxs, info = quantize_symbol(sym, args, auxs, images, batch_size=8)
    kept = helpers.forward(bind_inference(qsym, "data", shape, qargs, qauxs), images)
    monkeypatch.setattr(onednn_inference, "int8_excluded_layers", lambda s, **k: [])
    qsym, qargs, qauxs, _ = quantize_symbol(sym, args, auxs, images, batch_size=8)
    unguarded = helpers.forward(bind_inference(qsym, "data", shape, qargs, qauxs), images)
    scale = np.abs(plain).max()
    assert np.abs(kept - plain).max() < 0.1 * scale
    assert (np.abs(unguarded - plain).max() > 0.3 * scale) == wrong


def test_densenet_concatenations_are_plain_and_its_preactivations_int8():
    """The 5-D concatenation detour (a training-only workaround) becomes a 4-D Concat of the
    same name and values; the int8 graph then keeps no float32 BatchNorm or ReLU."""
    import json

    case = ("densenet", {"num_layers": 16, "growth_rate": 12}, (3, 32, 32))
    sym, args, auxs = helpers.build_case(case)
    logits = helpers.logits_of(sym)
    plain, names = onednn_inference.plain_concats(logits)
    assert len(names) == 6 and "block1_layer2_input" in names
    ops = [node["op"] for node in json.loads(plain.tojson())["nodes"]]
    assert "expand_dims" not in ops and ops.count("Concat") == 6
    nodes = json.loads(plain.tojson())["nodes"]
    concats = {n["name"]: n for n in nodes if n["op"] == "Concat"}
    # each concatenation joins the previous one and the newest map (2 layers per block)
    assert all(len(n["inputs"]) == 2 for n in concats.values())
    assert nodes[concats["block1_output"]["inputs"][0][0]]["name"] == "block1_layer2_input"
    shape = (BATCH,) + case[2]
    images = helpers.smooth_images(BATCH, case[2], 7)
    detour = helpers.forward(bind_inference(logits, "data", shape, args, auxs, fuse=False), images)
    joined = helpers.forward(bind_inference(plain, "data", shape, args, auxs, fuse=False), images)
    np.testing.assert_allclose(joined, detour, rtol=1e-5, atol=1e-6)
    qsym, _, _, _ = quantize_symbol(logits, args, auxs, helpers.smooth_images(32, case[2], 3),
                                    batch_size=16)
    ops = [node["op"] for node in json.loads(qsym.tojson())["nodes"]]
    assert "BatchNorm" not in ops and "Activation" not in ops and "Concat" not in ops
    assert ops.count("_contrib_quantized_concat") == 6
