"""The residual families: resnet / se_resnet, preact_resnet, wrn, resnext / se_resnext.

Parameter counts are *learnable* parameters: every argument of the symbol except ``data``
and ``softmax_label`` (conv/FC weights and biases, BN gamma and beta), without the BN
moving statistics (auxiliary states).  That is what the papers and torchvision report.
"""
import json
import math

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.symbols import preact_resnet, resnet, resnext, wrn

CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)
INPUTS = ("data", "softmax_label")


def reads_as(count, paper_millions):
    """True if ``count`` printed in millions with the paper's decimals gives its figure.

    Papers round (He et al., Zagoruyko & Komodakis) or truncate (Xie et al.: ResNeXt-29
    16x64d has 68.155M parameters, printed 68.1M; osmr/imgclsmob counts the same 68,155,210).
    """
    decimals = len(repr(paper_millions).split(".")[1])
    millions = count / 1e6
    scale = 10 ** decimals
    return paper_millions in (round(millions, decimals), math.floor(millions * scale) / scale)


# (network, num_layers, image_shape, num_classes, options, exact count, paper figure in M).
# Exact counts for ImageNet ResNet/ResNeXt equal torchvision's; the CIFAR ones equal
# osmr/imgclsmob's (option-A ResNets have no projection parameters).
PAPER_COUNTS = [
    ("resnet", 20, CIFAR, 10, {"shortcut_type": "A"}, 269722, 0.27),
    ("resnet", 32, CIFAR, 10, {"shortcut_type": "A"}, 464154, 0.46),
    ("resnet", 44, CIFAR, 10, {"shortcut_type": "A"}, 658586, 0.66),
    ("resnet", 56, CIFAR, 10, {"shortcut_type": "A"}, 853018, 0.85),
    ("resnet", 110, CIFAR, 10, {"shortcut_type": "A"}, 1727962, 1.7),
    ("resnet", 1202, CIFAR, 10, {"shortcut_type": "A"}, 19421274, 19.4),
    ("resnet", 164, CIFAR, 10, {}, 1704154, 1.7),      # He et al. 2016b Table 1, "original"
    ("preact_resnet", 164, CIFAR, 10, {}, 1703258, 1.7),
    ("preact_resnet", 1001, CIFAR, 10, {}, 10327706, 10.33),
    ("wrn", 16, CIFAR, 10, {"widen_factor": 8}, 10961370, 11.0),
    ("wrn", 28, CIFAR, 10, {"widen_factor": 10}, 36479194, 36.5),
    ("wrn", 40, CIFAR, 10, {"widen_factor": 4}, 8949210, 8.9),
    ("resnext", 29, CIFAR, 10, {"cardinality": 8, "bottleneck_width": 64}, 34426698, 34.4),
    ("resnext", 29, CIFAR, 10, {"cardinality": 16, "bottleneck_width": 64}, 68155210, 68.1),
    ("resnet", 18, IMAGENET, 1000, {}, 11689512, 11.7),
    ("resnet", 34, IMAGENET, 1000, {}, 21797672, 21.8),
    ("resnet", 50, IMAGENET, 1000, {}, 25557032, 25.6),
    ("resnet", 101, IMAGENET, 1000, {}, 44549160, 44.5),
    ("resnet", 152, IMAGENET, 1000, {}, 60192808, 60.2),
    ("resnext", 50, IMAGENET, 1000, {"cardinality": 32, "bottleneck_width": 4}, 25028904, 25.0),
    ("se_resnet", 50, IMAGENET, 1000, {}, 28088024, 28.09),  # Hu et al. Table 2
    ("se_resnext", 50, IMAGENET, 1000, {}, 27559896, 27.56),  # Hu et al. Table 2
]


@pytest.mark.parametrize("network,depth,shape,classes,options,exact,paper", PAPER_COUNTS,
                         ids=["%s-%d%s" % (c[0], c[1], "".join("-%s" % v for v in c[4].values()))
                              for c in PAPER_COUNTS])
def test_parameter_count_matches_the_paper(network, depth, shape, classes, options, exact, paper):
    sym = symbols.get_symbol(network, classes, depth, shape, **options)
    count = symbols.count_params(sym, shape)
    assert count == exact
    assert reads_as(count, paper), "%s-%d has %.3fM parameters, paper says %sM" % (
        network, depth, count / 1e6, paper)
    _, out_shapes, _ = sym.infer_shape(data=(2,) + shape)
    assert out_shapes == [(2, classes)]


# Further named configurations: each must infer (N, num_classes) at its input size.
SHAPE_CASES = [
    ("resnet", 200, IMAGENET, 1000, {}),
    ("resnet", 269, IMAGENET, 1000, {}),
    ("resnet", 110, CIFAR, 100, {}),
    ("resnet", 56, CIFAR, 10, {"shortcut_type": "C"}),
    ("resnet", 20, (3, 64, 64), 200, {}),                       # Tiny ImageNet, CIFAR layout
    ("resnet", 18, (3, 64, 48), 200, {"style": "imagenet"}),    # non-square, forced layout
    ("resnet", 50, (3, 32, 32), 10, {"style": "imagenet"}),
    ("resnet", 20, (1, 28, 28), 10, {}),                         # one-channel input
    ("se_resnet", 110, CIFAR, 10, {}),
    ("preact_resnet", 110, CIFAR, 10, {}),
    ("preact_resnet", 1001, CIFAR, 100, {}),
    ("preact_resnet", 18, IMAGENET, 1000, {}),
    ("preact_resnet", 152, IMAGENET, 1000, {}),
    ("preact_resnet", 200, IMAGENET, 1000, {}),
    ("wrn", 10, CIFAR, 10, {"widen_factor": 1}),
    ("wrn", 22, CIFAR, 100, {"widen_factor": 8, "dropout": 0.3}),
    ("wrn", 28, (3, 64, 64), 10, {"widen_factor": 2}),
    ("resnext", 29, CIFAR, 100, {"cardinality": 16, "bottleneck_width": 64}),
    ("resnext", 101, IMAGENET, 1000, {}),
    ("resnext", 152, IMAGENET, 1000, {"cardinality": 64, "bottleneck_width": 4}),
    ("se_resnext", 29, CIFAR, 10, {}),
    ("se_resnext", 101, IMAGENET, 1000, {}),
]


@pytest.mark.parametrize("network,depth,shape,classes,options", SHAPE_CASES)
def test_named_configuration_infers_its_output_shape(network, depth, shape, classes, options):
    sym = symbols.get_symbol(network, classes, depth, shape, **options)
    assert sym.list_outputs() == ["softmax_output"]
    _, out_shapes, _ = sym.infer_shape(data=(3,) + shape)
    assert out_shapes == [(3, classes)]


def _bind(sym, shape, batch=2, seed=0):
    """Bind ``sym`` for training on CPU with seeded random parameters; returns the executor."""
    exe = sym.simple_bind(mx.cpu(), data=(batch,) + shape, softmax_label=(batch,))
    rng = np.random.RandomState(seed)
    for name, array in exe.arg_dict.items():
        if name == "data":
            array[:] = rng.uniform(-1, 1, array.shape)
        elif name == "softmax_label":
            array[:] = rng.randint(0, array.shape[0], array.shape)  # labels < num_classes
        elif name.endswith("_gamma"):
            array[:] = 1.0
        elif name.endswith("_beta") or name.endswith("_bias"):
            array[:] = 0.0
        else:
            fan_in = int(np.prod(array.shape[1:]))
            array[:] = rng.normal(0, math.sqrt(2.0 / fan_in), array.shape)
    for name, array in exe.aux_dict.items():
        array[:] = 1.0 if name.endswith("_moving_var") else 0.0
    return exe


# Small configurations of every family and code path: trained one step forward and backward.
TRAINABLE = [
    ("resnet", 20, CIFAR, {"shortcut_type": "A"}),
    ("resnet", 20, CIFAR, {}),
    ("resnet", 29, CIFAR, {}),                                         # bottleneck (9n+2)
    ("resnet", 18, (3, 64, 64), {"style": "imagenet", "shortcut_type": "C"}),
    ("se_resnet", 20, CIFAR, {}),
    ("preact_resnet", 20, CIFAR, {}),
    ("preact_resnet", 20, CIFAR, {"shortcut_type": "A"}),
    ("preact_resnet", 29, CIFAR, {"shortcut_type": "C"}),            # bottleneck (9n+2)
    ("preact_resnet", 18, (3, 64, 64), {"style": "imagenet"}),
    ("wrn", 10, CIFAR, {"widen_factor": 1, "dropout": 0.3}),
    ("wrn", 16, CIFAR, {"widen_factor": 1}),
    ("resnext", 11, CIFAR, {"cardinality": 4, "bottleneck_width": 4}),  # 9n+2, n = 1
    ("se_resnext", 11, CIFAR, {"cardinality": 2, "bottleneck_width": 8}),
]


@pytest.mark.parametrize("network,depth,shape,options", TRAINABLE)
def test_small_configuration_trains_forward_and_backward(network, depth, shape, options):
    sym = symbols.get_symbol(network, 10, depth, shape, **options)
    exe = _bind(sym, shape, batch=2)
    probs = exe.forward(is_train=True)[0].asnumpy()
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    exe.backward()
    for name, grad in exe.grad_dict.items():
        if name in INPUTS:
            continue
        grad = grad.asnumpy()
        assert np.isfinite(grad).all(), name
        assert np.abs(grad).max() > 0, "no gradient reaches %s" % name


# ------------------------------------------------------------------ memonger and serialisation
MEMONGER_CASES = [
    ("resnet", 20, {}, 9),
    ("se_resnet", 20, {"shortcut_type": "A"}, 9),
    ("preact_resnet", 29, {}, 9),
    ("wrn", 16, {"widen_factor": 1, "dropout": 0.0}, 6),
    ("resnext", 11, {"cardinality": 4, "bottleneck_width": 4}, 3),
]


@pytest.mark.parametrize("network,depth,options,units", MEMONGER_CASES)
def test_memonger_tags_every_unit_without_changing_the_maths(network, depth, options, units):
    plain = symbols.get_symbol(network, 10, depth, CIFAR, **options)
    tagged = symbols.get_symbol(network, 10, depth, CIFAR, memonger=True, **options)
    assert tagged.list_arguments() == plain.list_arguments()
    assert tagged.list_auxiliary_states() == plain.list_auxiliary_states()
    stages = [name for name, attrs in tagged.attr_dict().items() if attrs.get("mirror_stage") == "True"]
    assert len(stages) == units
    assert not any("mirror_stage" in attrs for attrs in plain.attr_dict().values())
    outputs = []
    for sym in (plain, tagged):
        exe = _bind(sym, CIFAR, batch=2, seed=1)
        outputs.append(exe.forward(is_train=False)[0].asnumpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("network,depth,options", [
    ("resnet", 20, {"shortcut_type": "A", "memonger": True}),
    ("se_resnet", 50, {"style": "imagenet"}),
    ("preact_resnet", 164, {"memonger": True}),
    ("wrn", 16, {"widen_factor": 4, "dropout": 0.3}),
    ("resnext", 29, {}),
])
def test_json_round_trip(network, depth, options):
    sym = symbols.get_symbol(network, 10, depth, CIFAR, **options)
    text = sym.tojson()
    loaded = mx.sym.load_json(text)
    assert loaded.tojson() == text
    assert loaded.list_arguments() == sym.list_arguments()
    assert loaded.infer_shape(data=(1,) + CIFAR)[1] == [(1, 10)]


# ------------------------------------------------------------------ structure
def _params(sym):
    return set(sym.list_arguments()) - set(INPUTS)


def _input_of(sym, node_name):
    """Name of the first input node of ``node_name`` in the symbol graph."""
    nodes = json.loads(sym.tojson())["nodes"]
    node = next(n for n in nodes if n["name"] == node_name)
    return nodes[node["inputs"][0][0]]["name"]


@pytest.mark.parametrize("shortcut_type,projections", [("A", 0), ("B", 2), ("C", 9)])
def test_shortcut_options(shortcut_type, projections):
    sym = symbols.get_symbol("resnet", 10, 20, CIFAR, shortcut_type=shortcut_type)
    weights = sorted(p for p in _params(sym) if p.endswith("_sc_conv_weight"))
    assert len(weights) == projections
    if shortcut_type == "B":
        assert weights == ["stage2_unit1_sc_conv_weight", "stage3_unit1_sc_conv_weight"]


def test_default_shortcut_is_b():
    default = symbols.get_symbol("resnet", 10, 20, CIFAR)
    assert default.tojson() == symbols.get_symbol("resnet", 10, 20, CIFAR, shortcut_type="B").tojson()


def test_bottleneck_stride_sits_on_the_3x3_like_torchvision():
    attrs = symbols.get_symbol("resnet", 1000, 50, IMAGENET).attr_dict()
    assert attrs["stage2_unit1_a_conv"]["stride"] == "(1, 1)"
    assert attrs["stage2_unit1_b_conv"]["stride"] == "(2, 2)"
    assert attrs["stage2_unit1_b_conv"]["kernel"] == "(3, 3)"
    assert attrs["stem_conv"]["kernel"] == "(7, 7)" and attrs["stem_conv"]["stride"] == "(2, 2)"
    assert attrs["stem_pool"]["pool_type"] == "max"


def test_layout_follows_the_input_size_unless_style_is_given():
    cifar = symbols.get_symbol("resnet", 10, 20, (3, 64, 64))
    assert cifar.attr_dict()["stem_conv"]["kernel"] == "(3, 3)"
    with pytest.raises(ValueError, match="6n\\+2"):
        symbols.get_symbol("resnet", 10, 18, (3, 64, 64))
    imagenet = symbols.get_symbol("resnet", 10, 50, (3, 96, 96))
    assert imagenet.attr_dict()["stem_conv"]["kernel"] == "(7, 7)"
    forced = symbols.get_symbol("resnet", 10, 50, CIFAR, style="imagenet")
    assert forced.attr_dict()["stem_conv"]["kernel"] == "(7, 7)"


def test_default_depths():
    assert symbols.count_params(symbols.get_symbol("resnet"), CIFAR) == 272474               # ResNet-20
    assert symbols.count_params(symbols.get_symbol("resnet", 1000, image_shape=IMAGENET), IMAGENET) \
        == 25557032                                                                     # ResNet-50
    assert symbols.count_params(symbols.get_symbol("preact_resnet"), CIFAR) == 1703258        # PreAct-164
    assert symbols.count_params(symbols.get_symbol("wrn"), CIFAR) == 36479194                 # WRN-28-10
    assert symbols.count_params(symbols.get_symbol("resnext"), CIFAR) == 34426698             # 29 8x64d
    assert symbols.count_params(symbols.get_symbol("resnext", 1000, image_shape=IMAGENET),
                                IMAGENET) == 25028904                                         # 50 32x4d


@pytest.mark.parametrize("network", ["resnet", "preact_resnet"])
@pytest.mark.parametrize("depth,bottleneck,expected_units,expected_bottleneck", [
    (20, None, 3, False),      # 6n+2 (also 9n+2) below 164: basic, like ResNet-20
    (110, None, 18, False),    # 6n+2 and 9n+2 below 164: basic (He et al. ResNet-110)
    (164, None, 18, True),     # 6n+2 and 9n+2 from 164: bottleneck (He et al. ResNet-164)
    (1001, None, 111, True),   # 9n+2 only
    (29, None, 3, True),       # 9n+2 only
    (32, None, 5, False),      # 6n+2 only
    (20, True, 2, True),
    (164, False, 27, False),
])
def test_cifar_bottleneck_rule(network, depth, bottleneck, expected_units, expected_bottleneck):
    assert resnet.cifar_unit_type(depth, bottleneck) == (expected_units, expected_bottleneck)
    sym = symbols.get_symbol(network, 10, depth, CIFAR, bottleneck=bottleneck)
    params = _params(sym)
    assert ("stage1_unit1_c_conv_weight" in params) == expected_bottleneck
    assert "stage3_unit%d_a_conv_weight" % expected_units in params
    assert "stage3_unit%d_a_conv_weight" % (expected_units + 1) not in params


def test_preact_projection_reads_the_preactivated_input_and_identity_the_raw_one():
    sym = symbols.get_symbol("preact_resnet", 10, 20, CIFAR)
    assert _input_of(sym, "stage2_unit1_sc_conv") == "stage2_unit1_a_relu"
    assert _input_of(sym, "stage2_unit2_add") == "stage2_unit2_b_conv"
    nodes = json.loads(sym.tojson())["nodes"]
    add = next(n for n in nodes if n["name"] == "stage2_unit2_add")
    assert nodes[add["inputs"][1][0]]["name"] == "stage2_unit1_add"
    assert "stage2_unit1_sc_bn_gamma" not in _params(sym)        # bare projection, no BN
    assert {"post_bn_gamma", "post_bn_beta"} <= _params(sym)      # final BN-ReLU


def test_wrn_widths_and_dropout():
    sym = symbols.get_symbol("wrn", 10, 16, CIFAR, widen_factor=4, dropout=0.3)
    arg_shapes, _, _ = sym.infer_shape(data=(1,) + CIFAR)
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    assert shapes["stem_conv_weight"] == (16, 3, 3, 3)
    assert shapes["stage1_unit1_a_conv_weight"] == (64, 16, 3, 3)
    assert shapes["stage3_unit2_b_conv_weight"] == (256, 256, 3, 3)
    assert shapes["stage1_unit1_sc_conv_weight"] == (64, 16, 1, 1)
    attrs = sym.attr_dict()
    assert attrs["stage2_unit1_b_dropout"]["p"] == "0.3"
    dropouts = [n for n in attrs if n.endswith("_dropout")]
    assert len(dropouts) == 6
    plain = symbols.get_symbol("wrn", 10, 16, CIFAR, widen_factor=4)
    assert not any(n.endswith("_dropout") for n in plain.attr_dict())
    # k = 1 keeps widths 16/32/64, so the first stage needs no projection
    assert "stage1_unit1_sc_conv_weight" not in _params(symbols.get_symbol("wrn", 10, 16, CIFAR,
                                                                           widen_factor=1))


def test_resnext_groups_the_3x3():
    sym = symbols.get_symbol("resnext", 10, 29, CIFAR, cardinality=8, bottleneck_width=64)
    attrs = sym.attr_dict()
    arg_shapes, _, _ = sym.infer_shape(data=(1,) + CIFAR)
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    for stage, width in ((1, 512), (2, 1024), (3, 2048)):
        conv = "stage%d_unit1_b_conv" % stage
        assert attrs[conv]["num_group"] == "8"
        assert shapes[conv + "_weight"] == (width, width // 8, 3, 3)
    assert shapes["stage3_unit3_c_conv_weight"] == (1024, 2048, 1, 1)
    assert shapes["stem_conv_weight"] == (64, 3, 3, 3)


def test_se_variants_are_the_plain_ones_with_squeeze_excitation():
    se = symbols.get_symbol("se_resnet", 10, 20, CIFAR)
    assert se.tojson() == symbols.get_symbol("resnet", 10, 20, CIFAR, se_ratio=16).tojson()
    arg_shapes, _, _ = se.infer_shape(data=(1,) + CIFAR)
    shapes = dict(zip(se.list_arguments(), arg_shapes))
    assert shapes["stage3_unit1_se_fc1_weight"] == (4, 64, 1, 1)    # 64 / 16
    for off in (None, 0):
        plain = symbols.get_symbol("resnet", 10, 20, CIFAR, se_ratio=off)
        assert not any("_se_" in p for p in _params(plain))
    se_x = symbols.get_symbol("se_resnext", 10, 11, CIFAR, cardinality=2, bottleneck_width=8)
    assert "stage1_unit1_se_fc2_weight" in _params(se_x)


def test_variants_describe_the_spec_tables():
    for module in (resnet, preact_resnet, wrn, resnext):
        for name, _text in module.VARIANTS.items():
            assert name in symbols._NETWORKS and symbols._NETWORKS[name][0] is module
    assert "6n+2 (20, 32, 44, 56, 110, 1202)" in resnet.VARIANTS["resnet"]
    assert "18, 34, 50, 101, 152, 200" in resnet.VARIANTS["se_resnet"]
    assert "9n+2 (164, 1001)" in preact_resnet.VARIANTS["preact_resnet"]
    assert "6n+4" in wrn.VARIANTS["wrn"]
    assert "9n+2 (29)" in resnext.VARIANTS["se_resnext"]


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("network,depth,shape,options,expected", [
    ("resnet", 21, CIFAR, {}, "resnet on 32x32 (cifar layout) needs num_layers = basic "
                              "6n+2 (20, 32, 44, 56, 110, 1202) or bottleneck 9n+2 (164, 1001)"),
    ("resnet", 21, CIFAR, {}, "got 21"),
    ("resnet", 2, CIFAR, {}, "6n+2"),
    ("resnet", 77, IMAGENET, {}, "needs num_layers = one of 18, 34, 50, 101, 152, 200, 269, got 77"),
    ("se_resnet", 21, CIFAR, {}, "se_resnet on 32x32"),
    ("preact_resnet", 21, CIFAR, {}, "basic 6n+2 (20, 32, 44, 56, 110, 1202) or bottleneck 9n+2"),
    ("preact_resnet", 1001, CIFAR, {"bottleneck": False}, "6n+2 (20, 32, 44, 56, 110, 1202) with "
                                                          "bottleneck=False"),
    ("resnet", 50, IMAGENET, {"bottleneck": False}, "resnet: bottleneck applies to the CIFAR layout only"),
    ("preact_resnet", 32, CIFAR, {"bottleneck": True}, "9n+2 (164, 1001) with bottleneck=True"),
    ("preact_resnet", 50, IMAGENET, {"bottleneck": True}, "CIFAR layout only"),
    ("preact_resnet", 164, IMAGENET, {}, "one of 18, 34, 50"),
    ("preact_resnet", 20, CIFAR, {"bottleneck": "yes"}, "bottleneck must be one of None, True, False"),
    ("wrn", 20, CIFAR, {},
     "wrn on 32x32 (cifar layout) needs num_layers = 6n+4 (10, 16, 22, 28, 40), got 20"),
    ("wrn", 28, IMAGENET, {}, "wrn has only the CIFAR layout"),
    ("wrn", 28, CIFAR, {"widen_factor": 0}, "widen_factor"),
    ("wrn", 28, CIFAR, {"widen_factor": 2.5}, "widen_factor"),
    ("wrn", 28, CIFAR, {"dropout": 1.0}, "dropout must be a probability in [0, 1)"),
    ("wrn", 28, CIFAR, {"dropout": -0.1}, "dropout"),
    ("resnext", 50, CIFAR, {}, "resnext on 32x32 (cifar layout) needs num_layers = 9n+2 (29), got 50"),
    ("resnext", 18, IMAGENET, {}, "one of 50, 101, 152, 200, 269, got 18"),
    ("resnext", 29, CIFAR, {"cardinality": 0}, "cardinality (number of groups"),
    ("resnext", 29, CIFAR, {"cardinality": "8"}, "cardinality"),
    ("resnext", 29, CIFAR, {"bottleneck_width": -4}, "bottleneck_width"),
    ("se_resnext", 29, CIFAR, {"se_ratio": -1}, "se_ratio"),
    ("resnet", 20, CIFAR, {"shortcut_type": "D"}, "shortcut_type must be one of A, B, C, got 'D'"),
    ("preact_resnet", 20, CIFAR, {"shortcut_type": "b"}, "shortcut_type must be one of A, B, C"),
    ("resnet", 20, CIFAR, {"se_ratio": 2.5}, "se_ratio"),
    ("resnet", 20, CIFAR, {"bn_mom": 1.5}, "bn_mom"),
    ("resnext", 29, CIFAR, {"workspace": 0}, "workspace"),
    ("resnet", 20, CIFAR, {"style": "tiny"}, "style must be 'cifar' or 'imagenet'"),
])
def test_bad_input_gets_one_clear_error(network, depth, shape, options, expected):
    with pytest.raises(ValueError) as err:
        symbols.get_symbol(network, 10, depth, shape, **options)
    assert expected in str(err.value)


@pytest.mark.parametrize("network,option", [("resnet", "dropout"), ("wrn", "cardinality"),
                                            ("preact_resnet", "se_ratio"), ("resnext", "bottleneck")])
def test_unknown_options_are_refused_by_the_registry(network, option):
    with pytest.raises(ValueError, match="does not take option"):
        symbols.get_symbol(network, **{option: 1})


def test_residual_unit_needs_in_filter_when_shapes_change():
    data = mx.sym.Variable("data")
    with pytest.raises(ValueError, match="in_filter"):
        resnet.residual_unit(data, 32, 2, False, "u", bottle_neck=False)
    with pytest.raises(ValueError, match="stride 1"):
        preact_resnet.residual_unit(data, 32, 2, True, "u", bottle_neck=False)
    unit = resnet.residual_unit(data, 32, 2, False, "u", bottle_neck=False, in_filter=16,
                                shortcut_type="A")
    assert unit.infer_shape(data=(1, 16, 8, 8))[1] == [(1, 32, 4, 4)]
