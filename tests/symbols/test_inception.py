"""GoogLeNet, Inception-BN, Inception-v3, Inception-v4 and Inception-ResNet-v2
(symbols/googlenet.py, inception_bn.py, inception_v3.py, inception_v4.py).

Parameter counts (main head, 1000 classes) equal the reference implementations exactly:
torchvision googlenet / inception_v3, BVLC Caffe GoogLeNet, timm inception_v4 /
inception_resnet_v2.  Shapes are inferred at each network's native input; only the small
configurations run forward/backward (v3/v4 at 299 are too slow for the suite on CPU).
"""
import json

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.symbols import deep_supervision as ds

IMAGENET = (3, 224, 224)
V3 = (3, 299, 299)
CIFAR = (3, 32, 32)


def build(network, image_shape, num_classes=10, **options):
    return symbols.get_symbol(network, num_classes=num_classes, image_shape=image_shape,
                              **options)


# (network, options, native input, exact reference count, millions as the brief/papers round)
REFERENCE_PARAMS = [
    ("googlenet", {}, IMAGENET, 6624904, 6.6),                       # torchvision
    ("googlenet", {"batch_norm": False}, IMAGENET, 6998552, 7.0),    # BVLC Caffe
    ("inception_bn", {}, IMAGENET, 11285224, 11.3),                  # MXNet layout, no conv bias
    ("inception_v3", {}, V3, 23834568, 23.8),                        # torchvision, aux off
    ("inception_v4", {}, V3, 42679816, 42.7),                        # timm
    ("inception_resnet_v2", {}, V3, 55843464, 55.8),                 # timm / TF-slim
]


@pytest.mark.parametrize("network, options, shape, exact, millions", REFERENCE_PARAMS)
def test_parameter_counts_match_references(network, options, shape, exact, millions):
    sym = build(network, shape, num_classes=1000, **options)
    count = symbols.count_params(sym, shape)
    assert round(count / 1e6, 1) == millions
    assert count == exact


@pytest.mark.parametrize("network, options, shape, with_aux", [
    ("googlenet", {"aux_heads": True}, IMAGENET, 13004888),   # torchvision aux_logits=True
    ("inception_v3", {"aux_heads": True}, V3, 27161264),      # torchvision aux_logits=True
])
def test_aux_heads_add_the_reference_parameters_and_leave_the_main_network(
        network, options, shape, with_aux):
    sym = build(network, shape, num_classes=1000, **options)
    assert symbols.count_params(sym, shape) == with_aux
    plain = build(network, shape, num_classes=1000)
    assert ds.main_output(sym).tojson() == plain.tojson()


# (network, options, input, internal output, its (C, H, W))
FEATURE_SHAPES = [
    ("googlenet", {}, IMAGENET, "inception4a", (512, 14, 14)),
    ("googlenet", {}, IMAGENET, "inception5b", (1024, 7, 7)),
    ("googlenet", {"batch_norm": False}, IMAGENET, "inception5b", (1024, 7, 7)),
    ("googlenet", {}, CIFAR, "inception3b", (480, 32, 32)),
    ("googlenet", {}, CIFAR, "inception5b", (1024, 8, 8)),
    ("inception_bn", {}, IMAGENET, "inception3b", (320, 28, 28)),
    ("inception_bn", {}, IMAGENET, "inception5b", (1024, 7, 7)),
    ("inception_bn", {}, CIFAR, "inception5b", (336, 8, 8)),
    ("inception_v3", {}, V3, "pool2", (192, 35, 35)),
    ("inception_v3", {}, V3, "mixed5d", (288, 35, 35)),
    ("inception_v3", {}, V3, "mixed6e", (768, 17, 17)),
    ("inception_v3", {}, V3, "mixed7c", (2048, 8, 8)),
    ("inception_v4", {}, V3, "mixed5a", (384, 35, 35)),
    ("inception_v4", {}, V3, "reduction_a", (1024, 17, 17)),
    ("inception_v4", {}, V3, "inception_c3", (1536, 8, 8)),
    ("inception_resnet_v2", {}, V3, "mixed5b", (320, 35, 35)),
    ("inception_resnet_v2", {}, V3, "mixed6a", (1088, 17, 17)),
    ("inception_resnet_v2", {}, V3, "block8_10", (2080, 8, 8)),
    ("inception_resnet_v2", {}, V3, "conv7b_relu", (1536, 8, 8)),
]


@pytest.mark.parametrize("network, options, shape, internal, expected", FEATURE_SHAPES)
def test_feature_map_shapes_at_native_input(network, options, shape, internal, expected):
    sym = build(network, shape, **options)
    feature = sym.get_internals()[internal + "_output"]
    assert feature.infer_shape(data=(2,) + shape)[1] == [(2,) + expected]
    assert sym.infer_shape(data=(2,) + shape)[1] == [(2, 10)]


def test_registry_lists_and_maps_the_five_networks():
    listed = symbols.list_networks()
    for network in ("googlenet", "inception_bn", "inception_v3", "inception_v4",
                    "inception_resnet_v2"):
        assert listed[network]
    v4 = build("inception_v4", V3)
    irv2 = build("inception_resnet_v2", V3)
    assert "block35_1_up_weight" in irv2.list_arguments()
    assert not any(name.startswith("block") for name in v4.list_arguments())


def residual_scales(sym):
    nodes = json.loads(sym.tojson())["nodes"]
    scales = [float(node["attrs"]["scalar"]) for node in nodes if node["op"] == "_mul_scalar"]
    return {value: scales.count(value) for value in set(scales)}


def test_inception_resnet_residual_scaling():
    assert residual_scales(build("inception_resnet_v2", V3)) == {0.17: 10, 0.1: 20, 0.2: 9,
                                                                 1.0: 1}
    assert residual_scales(build("inception_resnet_v2", V3, residual_scale=0.3)) == {0.3: 39,
                                                                                     1.0: 1}


def test_googlenet_forms_differ_as_documented():
    bn = build("googlenet", IMAGENET)
    caffe = build("googlenet", IMAGENET, batch_norm=False)
    shapes = dict(zip(bn.list_arguments(), bn.infer_shape(data=(1,) + IMAGENET)[0]))
    assert shapes["inception3a_5x5_conv_weight"] == (32, 16, 3, 3)  # torchvision's kernel
    assert "inception3a_5x5_conv_bias" not in shapes
    shapes = dict(zip(caffe.list_arguments(), caffe.infer_shape(data=(1,) + IMAGENET)[0]))
    assert shapes["inception3a_5x5_conv_weight"] == (32, 16, 5, 5)
    assert "inception3a_5x5_conv_bias" in shapes
    ops = {node["op"] for node in json.loads(caffe.tojson())["nodes"]}
    assert "LRN" in ops and "BatchNorm" not in ops


def test_aux_head_outputs_follow_the_deep_supervision_convention():
    sym = build("googlenet", IMAGENET, aux_heads=True)
    assert sym.list_outputs() == ["softmax_output", "aux_inception4a_softmax_output",
                                  "aux_inception4d_softmax_output"]
    assert sym.list_arguments().count("softmax_label") == 1
    attrs = sym.attr_dict()
    assert float(attrs["aux_inception4a_softmax"]["grad_scale"]) == pytest.approx(0.3)
    assert sym.infer_shape(data=(2,) + IMAGENET)[1] == [(2, 10)] * 3

    v3 = build("inception_v3", V3, aux_heads=True, aux_weight=0.25)
    assert v3.list_outputs() == ["softmax_output", "aux_mixed6e_softmax_output"]
    assert float(v3.attr_dict()["aux_mixed6e_softmax"]["grad_scale"]) == pytest.approx(0.25)
    assert v3.infer_shape(data=(1,) + V3)[1] == [(1, 10)] * 2


def train_step(sym, shape, batch):
    """One Module forward/backward with the single label; returns outputs and gradients."""
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"],
                        context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch,) + shape)], label_shapes=[("softmax_label", (batch,))])
    mx.random.seed(0)
    mod.init_params(mx.init.Xavier(magnitude=2))
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.uniform(-1, 1, (batch,) + shape))
    label = mx.nd.array(rng.randint(0, 10, batch))
    mod.forward_backward(mx.io.DataBatch(data=[data], label=[label]))
    grad_dict = mod._exec_group.execs[0].grad_dict  # Module keeps gradients here
    return ([out.asnumpy() for out in mod.get_outputs()],
            {name: g.asnumpy() for name, g in grad_dict.items() if g is not None})


@pytest.mark.parametrize("network, shape, options, batch", [
    ("googlenet", IMAGENET, {"aux_heads": True, "batch_norm": False}, 1),
    ("googlenet", CIFAR, {"aux_heads": True}, 2),
    ("inception_bn", CIFAR, {}, 2),
])
def test_forward_backward_with_one_label(network, shape, options, batch):
    sym = build(network, shape, **options)
    outputs, grads = train_step(sym, shape, batch)
    assert len(outputs) == len(sym.list_outputs())
    for out in outputs:
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(grads["conv1_conv_weight"]).all()
    assert np.abs(grads["conv1_conv_weight"]).max() > 0
    for head in sym.list_outputs()[1:]:
        fc = head[:-len("_softmax_output")] + "_fc_out_weight"
        assert np.abs(grads[fc]).max() > 0


@pytest.mark.parametrize("network, options", [
    ("googlenet", {"aux_heads": True}),
    ("inception_bn", {}),
    ("inception_v3", {"aux_heads": True}),
    ("inception_v4", {}),
    ("inception_resnet_v2", {}),
])
def test_json_round_trip(network, options):
    shape = V3 if network.startswith("inception_v") or network.endswith("v2") else IMAGENET
    sym = build(network, shape, **options)
    loaded = mx.sym.load_json(sym.tojson())
    assert loaded.tojson() == sym.tojson()
    assert loaded.list_arguments() == sym.list_arguments()
    assert loaded.list_outputs() == sym.list_outputs()
    assert loaded.infer_shape(data=(1,) + shape)[1] == sym.infer_shape(data=(1,) + shape)[1]


@pytest.mark.parametrize("network, shape, options, message", [
    ("googlenet", IMAGENET, {"num_layers": 50}, "num_layers=None or 22"),
    ("googlenet", IMAGENET, {"batch_norm": "yes"}, "batch_norm must be one of"),
    ("googlenet", IMAGENET, {"aux_weight": 0}, "must be > 0"),
    ("inception_bn", IMAGENET, {"num_layers": 34}, "single depth"),
    ("inception_bn", IMAGENET, {"style": "mnist"}, "style must be"),
    ("inception_v3", CIFAR, {}, "inception_v3 needs inputs of at least 75x75"),
    ("googlenet", IMAGENET, {"dropout": 1.0}, "dropout must be in"),
    ("inception_v3", (3, 200, 200), {"aux_heads": True}, "head 'aux_mixed6e' cannot be built"),
    ("inception_v4", CIFAR, {}, "inception_v4 needs inputs of at least 75x75"),
    ("inception_resnet_v2", CIFAR, {}, "inception_resnet_v2 needs inputs of at least 75x75"),
    ("inception_v4", V3, {"residual_scale": 0.2}, "inception_resnet_v2 only"),
    ("inception_resnet_v2", V3, {"residual_scale": 2}, "residual_scale must be in"),
    ("inception_v4", V3, {"aux_heads": True}, "does not take option"),
])
def test_unsupported_variants_raise_clear_errors(network, shape, options, message):
    with pytest.raises(ValueError, match=message):
        build(network, shape, **options)


@pytest.mark.parametrize("network", ["inception_v3", "inception_v4", "inception_resnet_v2"])
def test_smallest_supported_input_builds(network):
    sym = build(network, (3, 75, 75))
    assert sym.infer_shape(data=(1, 3, 75, 75))[1] == [(1, 10)]
