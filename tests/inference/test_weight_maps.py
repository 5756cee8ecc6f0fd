"""inference/weight_maps.py, name_rules.py, weight_graph.py, weight_transforms.py: the mapping
tables name every parameter of our symbols exactly once, both ways, without any framework."""
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.inference import weight_maps, weight_transforms
from mxcnn.inference.name_rules import BiasIntoBN, RuleSet, Template
from mxcnn.inference.weight_graph import build_symbol, graph_difference, param_shapes

#: Every mapped architecture but the 1000-layer ones (their rules are their shallow siblings').
ARCHS = [(kind, name) for kind in sorted(weight_maps.SOURCES)
         for name, arch in sorted(weight_maps.SOURCES[kind].items())
         if not arch.refuse and arch.kwargs.get("num_layers", 0) < 1000]


@pytest.mark.parametrize("kind,name", ARCHS)
def test_every_parameter_has_one_source_name_and_back(kind, name):
    arch = weight_maps.SOURCES[kind][name]
    shape = arch.family.preprocess["image_shape"]
    sym = build_symbol(arch, 10, shape)
    rules = RuleSet(arch.family.rules)
    sources = {}
    for ours in param_shapes(sym, shape):
        source = rules.to_source(ours)
        assert source is not None, ours
        rule, back = rules.to_ours(source)
        assert back == ours and not isinstance(rule, BiasIntoBN), (ours, source, back)
        assert sources.setdefault(source, ours) == ours, "two of ours share %s" % source
    for source, bn in rules.folded_biases():  # folded biases land on a BatchNorm we have
        assert rules.to_ours(Template(source).format({}))[1] == bn + "_moving_mean"


def test_templates_parse_and_format_both_ways():
    template = Template("layer{s}.{u}.bn{k+1}.{p:bn_torch}")
    values = template.parse("layer3.0.bn2.running_var")
    assert values == {"s": 3, "u": 0, "k": 1, "p": 3}
    assert Template("stage{s}_unit{u+1}_{k:letter}_bn_{p:bn_ours}").format(values) == \
        "stage3_unit1_b_bn_moving_var"
    assert template.parse("layer3.0.bn0.weight") is None       # k would be -1
    assert template.parse("layer3.0.bn2.gamma") is None        # not torch's vocabulary
    assert Template("a{x}.b{x}").parse("a1.b2") is None        # one field, two values
    assert Template("Mixed_{m:word}.fc").parse("Mixed_6E.fc") is None  # words are lower case


def test_option_a_orders_round_trip_and_move_the_padding_to_the_end():
    orders = weight_transforms._stream_orders((16, 16, 32, 64))
    assert list(orders[2][:16]) == list(range(8, 24))            # 16 -> 32 pads 8 on each side
    assert sorted(orders[2][16:]) == list(range(8)) + list(range(24, 32))
    assert list(orders[3][:16]) == list(range(24, 40))           # then 16 more on each side
    rng = np.random.RandomState(0)
    sym = symbols.get_symbol("resnet", num_layers=20, shortcut_type="A")
    shapes = param_shapes(sym, (3, 32, 32))
    tensors = {n: rng.randn(*s).astype(np.float32) for n, s in shapes.items()}
    moved = dict(tensors)
    weight_transforms.option_a(moved, {"num_layers": 20}, to_ours=True)
    assert not np.array_equal(moved["fc1_weight"], tensors["fc1_weight"])
    assert np.array_equal(moved["stage1_unit2_a_conv_weight"], tensors["stage1_unit2_a_conv_weight"])
    weight_transforms.option_a(moved, {"num_layers": 20}, to_ours=False)
    assert all(np.array_equal(moved[n], tensors[n]) for n in tensors)


def test_bn_folds_compute_what_the_source_computes():
    rng = np.random.RandomState(1)
    bn = lambda: [rng.rand(3) + 0.5, rng.randn(3), rng.randn(3), rng.rand(3) + 0.5]  # noqa: E731
    eps, x = 1e-5, rng.randn(5, 3)
    apply = lambda x, g, b, m, v: g * (x - m) / np.sqrt(v + eps) + b  # noqa: E731
    first, second = bn(), bn()
    names = lambda p: ["%s.%s" % (p, k) for k in ("gamma", "beta", "running_mean", "running_var")]  # noqa
    tensors = dict(zip(names("one"), first), **dict(zip(names("two"), second)))
    weight_transforms.fold_bn_pair(tensors, "one.{p:bn_gluon}", "two.{p:bn_gluon}", eps)
    assert set(tensors) == set(names("two"))
    merged = [tensors[n].astype(np.float64) for n in names("two")]
    assert np.allclose(apply(x, *merged), apply(apply(x, *first), *second), rtol=1e-6)
    pixels = rng.uniform(0, 255, (5, 3))
    pre = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 58.0, 57.0]}
    data_bn = bn()
    tensors = dict(zip(names("in"), data_bn))
    folded = weight_transforms.fold_input_bn(tensors, "in.{p:bn_gluon}", False, eps, pre)
    normalised = (pixels - np.array(pre["mean"])) / np.array(pre["std"])
    assert not tensors
    assert np.allclose((pixels - np.array(folded["mean"])) / np.array(folded["std"]),
                       apply(normalised, *data_bn), rtol=1e-9)
    variance = np.array([0.5, 1.0], np.float32)
    shifted = weight_transforms.adjust_eps(variance, 2e-5, 1e-5)
    assert np.allclose(shifted + 1e-5, variance + 2e-5, rtol=0, atol=1e-7)


def test_graph_difference_names_the_first_operator_that_differs():
    arch = weight_maps.SOURCES["torchvision"]["googlenet"]
    reference = build_symbol(arch, 10, (3, 224, 224))
    native = symbols.get_symbol("googlenet", num_classes=10, image_shape=(3, 224, 224), style="imagenet")
    assert graph_difference(reference, reference) is None
    assert graph_difference(native, reference) == "node pool4: kernel (3, 3) where it has (2, 2)"
    gluon = weight_maps.SOURCES["gluoncv"]["cifar_resnet20_v2"]
    mine = symbols.get_symbol("preact_resnet", num_layers=20, bottleneck=False)
    assert "stage2_unit1_sc_conv: inputs" in graph_difference(mine, build_symbol(gluon, 10, (3, 32, 32)))
    dropout = symbols.get_symbol("mobilenet_v2", num_classes=10, image_shape=(3, 64, 64),
                                 style="imagenet", dropout=0.2)
    tv = weight_maps.SOURCES["torchvision"]["mobilenet_v2"]
    assert graph_difference(dropout, build_symbol(tv, 10, (3, 64, 64))) is None


def test_unknown_sources_list_the_choices():
    with pytest.raises(ValueError, match="KIND one of akamaster, gluoncv, mxnet, torchvision"):
        weight_maps.find_arch("keras:resnet50")
    with pytest.raises(ValueError, match="torchvision has no architecture 'resnet51'.*resnet50"):
        weight_maps.find_arch("torchvision:resnet51")
