"""The registry contract every family shares (symbols/__init__.py)."""
import mxnet as mx
import pytest

from mxcnn import symbols
from mxcnn.symbols import layers

# The input each network is built for when no num_layers/image_shape is given.
NATIVE_SHAPE = {
    "lenet": (1, 28, 28), "alexnet": (3, 224, 224), "vgg": (3, 224, 224),
    "googlenet": (3, 224, 224), "inception_bn": (3, 224, 224), "inception_v3": (3, 299, 299),
    "inception_v4": (3, 299, 299), "inception_resnet_v2": (3, 299, 299),
    "mobilenet": (3, 224, 224), "mobilenet_v2": (3, 224, 224),
}


def test_unknown_network_lists_the_choices():
    with pytest.raises(ValueError) as err:
        symbols.get_symbol("resnet_9000")
    assert "resnet" in str(err.value) and "densenet" in str(err.value)


def test_list_networks_describes_every_network():
    networks = symbols.list_networks()
    assert set(networks) == set(symbols._NETWORKS)
    for name, text in networks.items():
        assert isinstance(text, str) and text.strip(), name


@pytest.mark.parametrize("network", sorted(symbols._NETWORKS))
def test_default_build_is_a_checkpointable_classifier(network):
    shape = NATIVE_SHAPE.get(network, (3, 32, 32))
    sym = symbols.get_symbol(network, num_classes=7, image_shape=shape)
    assert sym.list_outputs()[0] == "softmax_output"
    assert "data" in sym.list_arguments() and "softmax_label" in sym.list_arguments()
    _, out_shapes, _ = sym.infer_shape(data=(2,) + shape)
    assert out_shapes[0] == (2, 7)
    assert mx.sym.load_json(sym.tojson()).tojson() == sym.tojson()


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(ValueError) as err:
        symbols.get_symbol("resnet", num_layers=20, widen_factor=4)
    assert "widen_factor" in str(err.value) and "shortcut_type" in str(err.value)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        symbols.get_symbol("resnet", num_classes=0, num_layers=20)


@pytest.mark.parametrize("text,expected", [("3,32,32", (3, 32, 32)), ([1, 28, 28], (1, 28, 28))])
def test_image_shape_forms(text, expected):
    assert layers.as_image_shape(text) == expected


@pytest.mark.parametrize("bad", ["3,32", "a,b,c", (3, 0, 32)])
def test_bad_image_shape(bad):
    with pytest.raises(ValueError, match="image_shape"):
        layers.as_image_shape(bad)


def test_option_a_shortcut_pads_channels_with_zeros():
    data = mx.sym.Variable("data")
    out = layers.shortcut(data, 2, 4, 2, "A", name="u")
    x = mx.nd.arange(2 * 2 * 4 * 4).reshape((2, 2, 4, 4))
    y = out.eval(data=x)[0].asnumpy()
    assert y.shape == (2, 4, 2, 2)
    assert (y[:, :2] == x.asnumpy()[:, :, ::2, ::2]).all() and (y[:, 2:] == 0).all()


@pytest.mark.parametrize("network,option,plain", [
    ("inception_resnet_v2", {"residual": False}, "inception_v4"),
    ("se_resnet", {"se_ratio": 0}, "resnet"),
    ("mobilenet_v2", {"version": 1}, "mobilenet"),
])
def test_implied_options_cannot_be_switched_off(network, option, plain):
    with pytest.raises(ValueError, match=plain):
        symbols.get_symbol(network, image_shape=(3, 299, 299) if "inception" in network else (3, 224, 224),
                           **option)


def test_implied_option_can_be_tuned():
    sym = symbols.get_symbol("se_resnet", num_layers=20, se_ratio=8)
    assert any("_se_" in name for name in sym.list_arguments())


def test_option_a_shortcut_can_quadruple_channels():
    data = mx.sym.Variable("data")
    out = layers.shortcut(data, 2, 8, 1, "A", name="u")
    x = mx.nd.ones((1, 2, 3, 3))
    y = out.eval(data=x)[0].asnumpy()
    assert y.shape == (1, 8, 3, 3) and (y[:, :2] == 1).all() and (y[:, 2:] == 0).all()
    sym = symbols.get_symbol("preact_resnet", num_layers=164, shortcut_type="A")
    assert sym.infer_shape(data=(1, 3, 32, 32))[1][0] == (1, 10)


def test_count_params_counts_learnable_weights_only():
    sym = symbols.get_symbol("resnet", num_layers=20, shortcut_type="A")
    assert symbols.count_params(sym, (3, 32, 32)) == 269722  # He et al. 2016: 0.27M
    lenet = symbols.get_symbol("lenet", image_shape=(1, 28, 28))
    assert symbols.count_params(lenet, "1,28,28") == 61706
