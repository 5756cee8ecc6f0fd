"""LeNet, AlexNet, VGG, DenseNet and MobileNet v1/v2 (symbols/lenet.py ... mobilenet.py).

Parameter counts are checked against the papers / torchvision, shapes at each network's
native input size, and the small configurations are trained for a few steps.
"""
import json

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols

IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)


def build(network, image_shape, num_classes=10, **options):
    return symbols.get_symbol(network, num_classes=num_classes, image_shape=image_shape,
                              **options)


def output_shape(sym, image_shape, internal=None, batch=2):
    if internal is not None:
        sym = sym.get_internals()[internal + "_output"]
    return sym.infer_shape(data=(batch,) + image_shape)[1][0]


# (network, options, input, classes, expected parameters in millions as the papers round them)
PAPER_PARAMS = [
    ("alexnet", {}, IMAGENET, 1000, 61.1),
    ("vgg", {"num_layers": 11}, IMAGENET, 1000, 132.9),
    ("vgg", {"num_layers": 13}, IMAGENET, 1000, 133.0),
    ("vgg", {"num_layers": 16}, IMAGENET, 1000, 138.4),
    ("vgg", {"config": "D"}, IMAGENET, 1000, 138.4),
    ("vgg", {"config": "C"}, IMAGENET, 1000, 133.6),
    ("vgg", {"num_layers": 19}, IMAGENET, 1000, 143.7),
    ("densenet", {"num_layers": 40, "bottleneck": False}, CIFAR, 10, 1.0),
    ("densenet", {"num_layers": 100, "bottleneck": False}, CIFAR, 10, 7.0),
    ("densenet", {"num_layers": 100, "growth_rate": 24, "bottleneck": False}, CIFAR, 10, 27.2),
    ("densenet", {"num_layers": 100}, CIFAR, 10, 0.8),
    ("densenet", {"num_layers": 250, "growth_rate": 24}, CIFAR, 10, 15.3),
    ("densenet", {"num_layers": 190, "growth_rate": 40}, CIFAR, 10, 25.6),
    ("densenet", {"num_layers": 121}, IMAGENET, 1000, 8.0),
    ("densenet", {"num_layers": 161}, IMAGENET, 1000, 28.7),
    ("densenet", {"num_layers": 169}, IMAGENET, 1000, 14.1),
    ("densenet", {"num_layers": 201}, IMAGENET, 1000, 20.0),
    ("mobilenet", {"multiplier": 1.0}, IMAGENET, 1000, 4.2),
    ("mobilenet", {"multiplier": 0.75}, IMAGENET, 1000, 2.6),
    ("mobilenet", {"multiplier": 0.5}, IMAGENET, 1000, 1.3),
    ("mobilenet", {"multiplier": 0.25}, IMAGENET, 1000, 0.5),
    ("mobilenet_v2", {"multiplier": 1.0}, IMAGENET, 1000, 3.5),
    ("mobilenet_v2", {"multiplier": 1.4}, IMAGENET, 1000, 6.1),
    ("mobilenet_v2", {"multiplier": 0.35}, IMAGENET, 1000, 1.7),
]


@pytest.mark.parametrize("network,options,image_shape,num_classes,millions", PAPER_PARAMS)
def test_parameter_count_matches_the_paper(network, options, image_shape, num_classes, millions):
    sym = build(network, image_shape, num_classes, **options)
    assert output_shape(sym, image_shape) == (2, num_classes)
    assert round(symbols.count_params(sym, image_shape) / 1e6, 1) == millions


@pytest.mark.parametrize("network,options,image_shape,exact", [
    ("lenet", {}, MNIST, 61706),  # LeNet-5 on MNIST, the commonly quoted figure
    ("alexnet", {}, IMAGENET, 61100840),  # torchvision alexnet
    ("vgg", {"num_layers": 16}, IMAGENET, 138357544),  # torchvision vgg16
    ("densenet", {"num_layers": 121}, IMAGENET, 7978856),  # torchvision densenet121
    ("mobilenet", {}, IMAGENET, 4231976),  # Keras MobileNet trainable parameters
    ("mobilenet_v2", {}, IMAGENET, 3504872),  # torchvision mobilenet_v2
])
def test_parameter_count_matches_reference_implementations(network, options, image_shape, exact):
    num_classes = 10 if network == "lenet" else 1000
    assert symbols.count_params(build(network, image_shape, num_classes, **options),
                                image_shape) == exact


# Every named configuration at its native input: (network, options, input, internal layer,
# its expected (C, H, W)) -- the internal layer pins the documented feature-map contract.
NATIVE = [
    ("lenet", {}, MNIST, "s4_pool", (16, 5, 5)),
    ("lenet", {}, CIFAR, "s4_pool", (16, 5, 5)),
    ("lenet", {"act_type": "relu", "pool_type": "max"}, (3, 28, 28), "s4_pool", (16, 5, 5)),
    ("alexnet", {}, IMAGENET, "pool5", (256, 6, 6)),
    ("alexnet", {}, (3, 227, 227), "pool5_resize", (256, 6, 6)),
    ("alexnet", {}, CIFAR, "pool5", (256, 4, 4)),
] + [
    ("vgg", {"config": config, "batch_norm": bn}, shape, "pool5", (512, side, side))
    for config in "ABCDE" for bn in (False, True) for shape, side in ((IMAGENET, 7), (CIFAR, 1))
] + [
    ("densenet", dict(num_layers=depth, growth_rate=k, bottleneck=bc), CIFAR, "final_relu",
     (channels, 8, 8))
    for depth, k, bc, channels in ((40, 12, False, 448), (100, 12, False, 1168),
                                   (100, 24, False, 2320), (100, 12, True, 342),
                                   (250, 24, True, 1734), (190, 40, True, 2190))
] + [
    ("densenet", {"num_layers": depth}, IMAGENET, "final_relu", (channels, 7, 7))
    for depth, channels in ((121, 1024), (161, 2208), (169, 1664), (201, 1920))
] + [
    ("mobilenet", {"multiplier": alpha}, (3, side, side), "sep13_pw_relu",
     (int(1024 * alpha), side // 32, side // 32))
    for alpha in (1.0, 0.75, 0.5, 0.25) for side in (224, 192, 160, 128)
] + [
    ("mobilenet", {"multiplier": 0.5}, CIFAR, "sep13_pw_relu", (512, 2, 2)),
    ("mobilenet_v2", {}, IMAGENET, "last_relu6", (1280, 7, 7)),
    ("mobilenet_v2", {"multiplier": 1.4}, (3, 160, 160), "last_relu6", (1792, 5, 5)),
    ("mobilenet_v2", {"multiplier": 0.5}, (3, 128, 128), "last_relu6", (1280, 4, 4)),
    ("mobilenet_v2", {}, CIFAR, "last_relu6", (1280, 4, 4)),
]


@pytest.mark.parametrize("network,options,image_shape,internal,feature_shape", NATIVE)
def test_native_input_shapes(network, options, image_shape, internal, feature_shape):
    sym = build(network, image_shape, num_classes=100, **options)
    assert output_shape(sym, image_shape) == (2, 100)
    assert output_shape(sym, image_shape, internal) == (2,) + feature_shape


# Small configurations that run forward and backward: (network, options, input, SGD rate).
SMALL = [
    ("lenet", {}, MNIST, 0.05),
    ("alexnet", {"dropout": 0.0}, CIFAR, 0.001),  # no BN: a larger rate overshoots
    ("vgg", {"num_layers": 11, "batch_norm": True}, CIFAR, 0.05),
    ("densenet", {"num_layers": 7, "bottleneck": False, "growth_rate": 8}, CIFAR, 0.05),
    ("densenet", {"num_layers": 10, "bottleneck": False, "growth_rate": 8}, CIFAR, 0.05),
    ("densenet", {"num_layers": 16, "growth_rate": 8}, CIFAR, 0.05),
    ("mobilenet", {"multiplier": 0.25}, CIFAR, 0.05),
    ("mobilenet_v2", {"multiplier": 0.25}, CIFAR, 0.05),
]
BATCH = 4
NUM_CLASSES = 3


def fixed_batch(image_shape):
    rng = np.random.RandomState(7)
    return (rng.uniform(-1, 1, (BATCH,) + image_shape), np.arange(BATCH) % NUM_CLASSES)


def gradients(sym, image_shape, dtype):
    """Gradients of every argument for one training-mode pass with He-initialised weights."""
    data, label = fixed_batch(image_shape)
    executor = sym.simple_bind(mx.cpu(), data=data.shape, softmax_label=label.shape,
                               type_dict={"data": dtype})
    rng = np.random.RandomState(0)
    for name, array in executor.arg_dict.items():
        if name == "data":
            array[:] = data
        elif name == "softmax_label":
            array[:] = label
        elif name.endswith("_gamma"):
            array[:] = 1
        elif name.endswith(("_beta", "_bias")):
            array[:] = 0
        else:
            array[:] = rng.normal(0, np.sqrt(2.0 / np.prod(array.shape[1:])), array.shape)
    for name, array in executor.aux_dict.items():
        array[:] = 1 if name.endswith("_var") else 0
    executor.forward(is_train=True)
    executor.backward()
    return {name: grad.asnumpy().astype(np.float64) for name, grad in executor.grad_dict.items()
            if name != "softmax_label"}


@pytest.mark.parametrize("network,options,image_shape,_", SMALL)
def test_gradients_match_a_float64_reference(network, options, image_shape, _):
    """float32 runs on oneDNN, float64 on MXNet's own kernels: the gradients must agree.

    This is what caught oneDNN's Concat backward zeroing DenseNet gradients (densenet.py).
    """
    sym = build(network, image_shape, num_classes=NUM_CLASSES, **options)
    fast, exact = gradients(sym, image_shape, "float32"), gradients(sym, image_shape, "float64")
    scale = max(np.abs(g).max() for g in exact.values())
    for name, reference in exact.items():
        if np.abs(reference).max() < 1e-4 * scale:
            continue  # zero in exact arithmetic (e.g. a bias feeding BatchNorm): only noise
        assert np.isfinite(fast[name]).all(), name
        cosine = (fast[name] * reference).sum() / (np.linalg.norm(fast[name])
                                                   * np.linalg.norm(reference))
        assert cosine > 0.99, (name, cosine)


def train_steps(sym, image_shape, steps, lr):
    """Mean cross-entropy before each of ``steps`` SGD updates on one fixed batch."""
    mx.random.seed(7)
    data, label = (mx.nd.array(a) for a in fixed_batch(image_shape))
    module = mx.mod.Module(sym, context=mx.cpu())
    module.bind(data_shapes=[("data", data.shape)], label_shapes=[("softmax_label", label.shape)])
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": lr,
                                                             "momentum": 0.9})
    batch = mx.io.DataBatch([data], [label])
    losses = []
    for _ in range(steps):
        module.forward_backward(batch)
        probs = module.get_outputs()[0].asnumpy()
        assert probs.shape == (BATCH, NUM_CLASSES)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
        losses.append(-np.log(probs[np.arange(BATCH), label.asnumpy().astype(int)]).mean())
        module.update()
    return losses


@pytest.mark.parametrize("network,options,image_shape,lr", SMALL)
def test_small_networks_learn_a_fixed_batch(network, options, image_shape, lr):
    sym = build(network, image_shape, num_classes=NUM_CLASSES, **options)
    losses = train_steps(sym, image_shape, steps=12, lr=lr)
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses


def test_vgg_config_c_uses_1x1_convolutions_in_the_last_three_stages():
    sym = build("vgg", IMAGENET, config="C")
    kernels = {name[:-len("_weight")]: shape[2:] for name, shape in
               zip(sym.list_arguments(), sym.infer_shape(data=(1,) + IMAGENET)[0])
               if name.endswith("_conv_weight")}
    assert sorted(n for n, k in kernels.items() if k == (1, 1)) == \
        ["conv3_3_conv", "conv4_3_conv", "conv5_3_conv"]
    assert len(kernels) == 13


def test_vgg_heads_by_style():
    def fc_shapes(sym, shape):
        return {name: s for name, s in zip(sym.list_arguments(),
                                           sym.infer_shape(data=(1,) + shape)[0])
                if name.startswith("fc") and name.endswith("_weight")}
    assert fc_shapes(build("vgg", CIFAR, num_layers=11), CIFAR) == {"fc1_weight": (10, 512)}
    assert fc_shapes(build("vgg", CIFAR, num_layers=11, style="imagenet"), CIFAR) == {
        "fc6_weight": (4096, 512 * 7 * 7), "fc7_weight": (4096, 4096), "fc1_weight": (10, 4096)}


def count_ops(sym, op):
    return sum(node["op"] == op for node in json.loads(sym.tojson())["nodes"])


def test_dropout_options():
    assert count_ops(build("alexnet", IMAGENET), "Dropout") == 2
    assert count_ops(build("alexnet", IMAGENET, dropout=0), "Dropout") == 0
    assert count_ops(build("vgg", IMAGENET), "Dropout") == 2
    assert count_ops(build("vgg", CIFAR), "Dropout") == 0
    # DenseNet-BC-16: 2 layers per block, 2 convs each, plus 2 transitions
    assert count_ops(build("densenet", CIFAR, num_layers=16, dropout=0.2), "Dropout") == 14
    assert count_ops(build("densenet", CIFAR, num_layers=16), "Dropout") == 0
    assert count_ops(build("mobilenet_v2", CIFAR, dropout=0.2), "Dropout") == 1


def test_mobilenet_v2_residuals_and_linear_bottlenecks():
    sym = build("mobilenet_v2", IMAGENET)
    # stride-1 blocks that keep their width: 1 + 2 + 3 + 2 + 2 of the 17
    assert count_ops(sym, "elemwise_add") == 10
    names = sym.get_internals().list_outputs()
    assert "block17_project_bn_output" in names  # linear bottleneck: nothing after the BN
    assert not [n for n in names if "_project_relu" in n]
    # depthwise: one 3x3 filter per channel
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=(1,) + IMAGENET)[0]))
    assert shapes["block2_dw_conv_weight"] == (96, 1, 3, 3)
    assert shapes["block1_dw_conv_weight"] == (32, 1, 3, 3)
    assert "block1_expand_conv_weight" not in shapes  # t = 1: no expansion


def test_mobilenet_v1_depthwise_separable():
    sym = build("mobilenet", IMAGENET, multiplier=0.75)
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=(1,) + IMAGENET)[0]))
    assert shapes["stem_conv_weight"] == (24, 3, 3, 3)
    assert shapes["sep1_dw_conv_weight"] == (24, 1, 3, 3)
    assert shapes["sep1_pw_conv_weight"] == (48, 24, 1, 1)
    assert shapes["fc1_weight"] == (10, 768)


def test_densenet_transitions_compress():
    sym = build("densenet", CIFAR, num_layers=100)  # BC, k=12: 24 + 16*12 = 216 -> 108 ...
    assert output_shape(sym, CIFAR, "transition1_pool") == (2, 108, 16, 16)
    assert output_shape(sym, CIFAR, "transition2_pool") == (2, 150, 8, 8)
    plain = build("densenet", CIFAR, num_layers=40, bottleneck=False)  # 16 + 12*12 = 160 kept
    assert output_shape(plain, CIFAR, "transition1_pool") == (2, 160, 16, 16)
    custom = build("densenet", CIFAR, num_layers=40, bottleneck=False, reduction=0.5)
    assert output_shape(custom, CIFAR, "transition1_pool") == (2, 80, 16, 16)


def test_densenet_concat_features_is_a_channel_concatenation():
    from mxcnn.symbols import densenet
    pieces = [np.random.RandomState(i).uniform(size=(2, c, 3, 4)) for i, c in enumerate((5, 2, 3))]
    names = ["a", "b", "c"]
    joined = densenet.concat_features([mx.sym.Variable(n) for n in names], "joined")
    out = joined.eval(**{n: mx.nd.array(p) for n, p in zip(names, pieces)})[0]
    np.testing.assert_allclose(out.asnumpy(), np.concatenate(pieces, axis=1), rtol=1e-6)
    assert joined.name == "joined"


@pytest.mark.parametrize("network,options,image_shape,expected", [
    ("vgg", {"num_layers": 17}, IMAGENET, r"vgg num_layers must be one of 11, 13, 16, 19, got 17"),
    ("vgg", {"config": "F"}, IMAGENET, r"vgg config must be one of A, B, C, D, E, got 'F'"),
    ("vgg", {"config": "C", "num_layers": 19}, IMAGENET, r"config 'C' has 16 layers"),
    ("vgg", {}, (3, 16, 16), r"at least 32x32"),
    ("densenet", {"num_layers": 41}, CIFAR, r"4 \+ 6\*n.*num_layers=41.*100, 190, 250"),
    ("densenet", {"num_layers": 42, "bottleneck": False}, CIFAR, r"4 \+ 3\*n.*40, 100"),
    ("densenet", {"num_layers": 4}, CIFAR, r"num_layers=4"),
    ("densenet", {"num_layers": 121}, CIFAR, r"ImageNet layout: pass style='imagenet'"),
    ("densenet", {"num_layers": 122}, IMAGENET, r"must be one of 121, 161, 169, 201"),
    ("densenet", {"num_layers": 121, "bottleneck": False}, IMAGENET, r"DenseNet-BC"),
    ("densenet", {"reduction": 0}, CIFAR, r"reduction"),
    ("densenet", {"reduction": 1.5}, CIFAR, r"reduction"),
    ("densenet", {"growth_rate": 0}, CIFAR, r"growth_rate"),
    ("densenet", {"dropout": 1.0}, CIFAR, r"dropout"),
    ("mobilenet", {"multiplier": 0}, IMAGENET, r"multiplier.*1\.0, 0\.75, 0\.5, 0\.25"),
    ("mobilenet_v2", {"num_layers": 50}, IMAGENET, r"mobilenet_v2 num_layers must be one of 53"),
    ("mobilenet", {"style": "mnist"}, CIFAR, r"style must be 'cifar' or 'imagenet'"),
    ("alexnet", {"style": "imagenet"}, CIFAR, r"at least 63x63"),
    ("alexnet", {"num_layers": 5}, CIFAR, r"must be one of 8"),
    ("lenet", {"act_type": "gelu"}, MNIST, r"act_type must be one of tanh, relu, sigmoid"),
    ("lenet", {}, (1, 8, 8), r"at least 12x12"),
])
def test_unsupported_variants_name_the_choices(network, options, image_shape, expected):
    with pytest.raises(ValueError, match=expected):
        build(network, image_shape, **options)


def test_mobilenet_version_is_checked():
    from mxcnn.symbols import mobilenet
    with pytest.raises(ValueError, match="version must be one of 1, 2"):
        mobilenet.get_symbol(version=3)


def test_variants_describe_the_choices():
    networks = symbols.list_networks()
    assert "11, 13, 16, 19" in networks["vgg"] and "config='C'" in networks["vgg"]
    assert "121, 161, 169, 201" in networks["densenet"]
    assert "0.25" in networks["mobilenet"] and "53" in networks["mobilenet_v2"]


@pytest.mark.parametrize("network,options,image_shape", [
    ("lenet", {"pool_type": "max"}, MNIST),
    ("alexnet", {}, IMAGENET),
    ("vgg", {"config": "C", "batch_norm": True}, CIFAR),
    ("densenet", {"num_layers": 16, "dropout": 0.2, "reduction": 0.7}, CIFAR),
    ("mobilenet", {"multiplier": 0.5}, (3, 160, 160)),
    ("mobilenet_v2", {"multiplier": 0.75, "style": "cifar"}, (3, 64, 64)),
])
def test_json_round_trip(network, options, image_shape):
    sym = build(network, image_shape, **options)
    loaded = mx.sym.load_json(sym.tojson())
    assert loaded.tojson() == sym.tojson()
    assert loaded.list_arguments() == sym.list_arguments()
    assert loaded.list_auxiliary_states() == sym.list_auxiliary_states()
    assert loaded.infer_shape(data=(2,) + image_shape) == sym.infer_shape(data=(2,) + image_shape)
