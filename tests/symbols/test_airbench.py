"""airbench94's network (symbols/airbench.py): layout, parameter count, init, whitening."""
import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.symbols import airbench
from mxcnn.train import data_init, engines

CIFAR = (3, 32, 32)


def expected_params(widths=(64, 256, 256), channels=3, classes=10, k=2):
    """The count from the paper's layout: whitening conv (weight + bias), two 3x3 convs per
    group without bias, BN gamma + beta after each, fc1 without bias."""
    whiten = 2 * channels * k * k
    total = whiten * channels * k * k + whiten
    in_c = whiten
    for w in widths:
        total += in_c * w * 9 + w * w * 9 + 2 * (2 * w)
        in_c = w
    return total + in_c * classes


def test_parameter_count_is_the_papers_layout():
    sym = symbols.get_symbol("airbench", num_classes=10)
    assert symbols.count_params(sym, CIFAR) == expected_params() == 1972792


def test_shapes_through_the_network():
    sym = symbols.get_symbol("airbench", num_classes=10)
    internals = sym.get_internals()
    outs = dict(zip(internals.list_outputs(), internals.infer_shape(data=(2,) + CIFAR)[1]))
    assert outs["whiten_conv_output"] == (2, 24, 31, 31)
    assert outs["block1_gelu2_output"] == (2, 64, 15, 15)
    assert outs["block2_gelu2_output"] == (2, 256, 7, 7)
    assert outs["block3_gelu2_output"] == (2, 256, 3, 3)
    assert outs["softmax_output"] == (2, 10)
    # seven convolutions and fc1: the "8 layers"
    weights = [n for n in sym.list_arguments() if n.endswith("_weight")]
    assert len(weights) == 8


def test_widths_option_and_bad_options():
    sym = symbols.get_symbol("airbench", num_classes=100, widths=(32, 64, 128))
    assert symbols.count_params(sym, CIFAR) == expected_params((32, 64, 128), classes=100)
    for bad in ({"widths": (64, 256)}, {"num_layers": 20}, {"image_shape": (3, 8, 8)}):
        with pytest.raises(ValueError):
            symbols.get_symbol("airbench", **bad)


def test_init_dirac_frozen_whitening_and_fixed_gamma():
    sym = symbols.get_symbol("airbench")
    mx.random.seed(0)
    np.random.seed(0)
    arg, aux = engines.initial_params(sym, (1,) + CIFAR)
    w = arg["block2_conv2_weight"].asnumpy()           # 256 x 256: all filters are identities
    assert np.array_equal(w[:, :, 1, 1], np.eye(256)) and not w[:, :, 0, 0].any()
    w = arg["block2_conv1_weight"].asnumpy()           # 256 x 64: the first 64 are identities
    assert np.array_equal(w[:64, :, 1, 1], np.eye(64))
    assert np.abs(w[64:]).max() <= 1 / np.sqrt(64 * 9) and np.abs(w[64:]).max() > 0
    attrs = sym.attr_dict()
    assert attrs["whiten_conv_weight"]["__lr_mult__"] == "0.0"
    assert attrs["whiten_conv_weight"]["__data_init__"] == airbench.DATA_INIT
    bn = [a for n, a in attrs.items() if n.endswith("_bn1") or n.endswith("_bn2")]
    assert len(bn) == 6 and all(a["fix_gamma"] == "True" for a in bn)


def test_whitening_weight_whitens_the_patches():
    rs = np.random.RandomState(0)
    mix = rs.randn(3, 3)
    images = np.einsum("ij,njhw->nihw", mix, rs.randn(200, 3, 10, 10)).astype(np.float32)
    weight = airbench.whitening_weight(images, eps=0.0)
    assert weight.shape == (24, 3, 2, 2)
    assert np.allclose(weight[12:], -weight[:12])
    out = mx.nd.Convolution(mx.nd.array(images), mx.nd.array(weight), no_bias=True, kernel=(2, 2),
                            num_filter=24).asnumpy()[:, :12]
    flat = out.transpose(0, 2, 3, 1).reshape(-1, 12)
    assert np.allclose(flat.T @ flat / len(flat), np.eye(12), atol=1e-3)


def test_trainer_data_init_sets_the_whitening_filters():
    sym = symbols.get_symbol("airbench")
    arg, _ = engines.initial_params(sym, (1,) + CIFAR)
    images = np.random.RandomState(1).randn(16, *CIFAR).astype(np.float32)
    assert data_init.requested(sym) == {"whiten_conv_weight": airbench.DATA_INIT}
    assert data_init.apply(sym, arg, images) == ["whiten_conv_weight"]
    assert np.allclose(arg["whiten_conv_weight"].asnumpy(), airbench.whitening_weight(images))


@pytest.mark.parametrize("engine", ["module", "gluon"])
def test_whitening_stays_frozen_while_training(engine):
    sym = symbols.get_symbol("airbench", widths=(16, 16, 16), num_classes=4)
    shape = (8, 3, 16, 16)
    arg, aux = engines.initial_params(sym, shape)
    before = arg["whiten_conv_weight"].asnumpy().copy()
    runner = engines.make_engine(engine, sym, [mx.cpu()], shape, (8,), arg, aux, "nag",
                                 {"learning_rate": 0.5, "momentum": 0.9, "wd": 0.1})
    data = mx.nd.random.uniform(-1, 1, shape=shape)
    for _ in range(2):
        runner.step(data, mx.nd.array(np.arange(8) % 4))
    after, _ = runner.get_params()
    assert np.array_equal(after["whiten_conv_weight"].asnumpy(), before)
    assert not np.array_equal(after["block1_conv1_weight"].asnumpy(),
                              arg["block1_conv1_weight"].asnumpy())
