"""Deep supervision (symbols/deep_supervision.py): auxiliary heads on any network symbol.

Built on a small CIFAR-style network made with the shared layers, so the tests do not depend
on another family's naming.  Checks the output convention the trainer relies on (output 0 =
'softmax', aux heads '<head>_softmax' sharing the one label 'softmax_label', grad_scale =
weight), a Module forward/backward, the inference symbol and the error messages.
"""
import functools

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.symbols import deep_supervision as ds
from mxcnn.symbols.layers import classifier, conv_bn_act, softmax_output

SHAPE = (3, 16, 16)
CLASSES = 5


def small_net(normalization=None):
    """stem 16x16 -> stage1 16x16x8 -> stage2 8x8x16 -> stage3 4x4x32 -> fc1 -> softmax."""
    x = conv_bn_act(mx.sym.Variable("data"), 8, name="stem")
    x = conv_bn_act(x, 8, name="stage1_unit1")
    x = conv_bn_act(x, 16, stride=2, name="stage2_unit1")
    x = conv_bn_act(x, 32, stride=2, name="stage3_unit1")
    logits = classifier(x, CLASSES)
    if normalization:
        return mx.sym.SoftmaxOutput(logits, name="softmax", normalization=normalization)
    return softmax_output(logits)


HEADS = {"stage1_unit1_relu_output": 0.3, "stage2_unit1_relu": 0.5}  # suffix optional


def bind(sym, batch=4, params=None, for_training=True):
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"],
                        context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch,) + SHAPE)],
             label_shapes=[("softmax_label", (batch,))], for_training=for_training)
    if params is None:
        mx.random.seed(1)
        mod.init_params(mx.init.Xavier(magnitude=2))
    else:
        mod.set_params(*params)
    return mod


def batch_of(batch=4, seed=0):
    rng = np.random.RandomState(seed)
    data = mx.nd.array(rng.uniform(-1, 1, (batch,) + SHAPE))
    label = mx.nd.array(rng.randint(0, CLASSES, batch))
    return mx.io.DataBatch(data=[data], label=[label])


def test_output_convention_and_single_label():
    sym = ds.attach_heads(small_net(), HEADS, CLASSES)
    assert sym.list_outputs() == ["softmax_output", "dsn_stage1_unit1_relu_softmax_output",
                                  "dsn_stage2_unit1_relu_softmax_output"]
    assert sym.list_arguments().count("softmax_label") == 1
    assert [n for n in sym.list_arguments() if n.endswith("_label")] == ["softmax_label"]
    attrs = sym.attr_dict()
    assert float(attrs["dsn_stage1_unit1_relu_softmax"]["grad_scale"]) == pytest.approx(0.3)
    assert float(attrs["dsn_stage2_unit1_relu_softmax"]["grad_scale"]) == pytest.approx(0.5)
    _, out_shapes, _ = sym.infer_shape(data=(2,) + SHAPE)
    assert out_shapes == [(2, CLASSES)] * 3
    assert ds.aux_output_names(sym) == sym.list_outputs()[1:]


def test_main_head_options_are_copied_to_aux_heads():
    sym = ds.attach_heads(small_net(normalization="valid"), ["stage2_unit1_relu_output"], CLASSES)
    assert sym.attr_dict()["dsn_stage2_unit1_relu_softmax"]["normalization"] == "valid"


def test_module_forward_backward_and_loss_weight_scales_head_gradient():
    grads = {}
    for weight in (1.0, 0.25):
        sym = ds.attach_heads(small_net(), {"stage2_unit1_relu_output": weight}, CLASSES)
        mod = bind(sym)
        mod.forward_backward(batch_of())
        outputs = mod.get_outputs()
        assert [o.shape for o in outputs] == [(4, CLASSES), (4, CLASSES)]
        for out in outputs:  # both heads are softmax probabilities
            np.testing.assert_allclose(out.asnumpy().sum(axis=1), 1.0, rtol=1e-5)
        grad_dict = mod._exec_group.execs[0].grad_dict  # Module keeps gradients here
        grads[weight] = {name: g.asnumpy() for name, g in grad_dict.items() if g is not None}
    head_param = "dsn_stage2_unit1_relu_score_weight"
    assert np.abs(grads[1.0][head_param]).max() > 0
    # the head's own parameters see only its loss, scaled by its weight
    np.testing.assert_allclose(grads[0.25][head_param], 0.25 * grads[1.0][head_param],
                               rtol=1e-4, atol=1e-7)
    # the main classifier sees only the main loss
    np.testing.assert_allclose(grads[0.25]["fc1_weight"], grads[1.0]["fc1_weight"],
                               rtol=1e-5, atol=1e-7)
    # the trunk below the attach point sees both
    assert not np.allclose(grads[0.25]["stem_conv_weight"], grads[1.0]["stem_conv_weight"])


def test_main_output_is_the_inference_network():
    net = small_net()
    sym = ds.attach_heads(net, HEADS, CLASSES)
    main = ds.main_output(sym)
    assert main.list_outputs() == ["softmax_output"]
    assert main.tojson() == net.tojson()
    assert ds.main_output(net) is net

    train_mod = bind(sym)
    arg_params, aux_params = train_mod.get_params()
    assert any(name.startswith("dsn_") for name in arg_params)
    pruned = ds.prune_params(main, arg_params, aux_params)
    assert not any(name.startswith("dsn_") for name in list(pruned[0]) + list(pruned[1]))
    infer_mod = bind(main, params=pruned, for_training=False)  # no allow_extra needed
    batch = batch_of()
    train_mod.forward(batch, is_train=False)
    infer_mod.forward(batch, is_train=False)
    np.testing.assert_allclose(infer_mod.get_outputs()[0].asnumpy(),
                               train_mod.get_outputs()[0].asnumpy(), rtol=1e-5)


def test_heads_can_be_added_to_a_grouped_symbol():
    sym = ds.attach_heads(small_net(), ["stage1_unit1_relu_output"], CLASSES)
    sym = ds.attach_heads(sym, ["stage3_unit1_relu_output"], CLASSES, prefix="late_")
    assert sym.list_outputs() == ["softmax_output", "dsn_stage1_unit1_relu_softmax_output",
                                  "late_stage3_unit1_relu_softmax_output"]
    assert sym.list_arguments().count("softmax_label") == 1
    with pytest.raises(ValueError, match="already exists"):
        ds.attach_heads(sym, ["stage1_unit1_relu_output"], CLASSES)


def test_head_parameters_may_not_clash_with_the_network():
    with pytest.raises(ValueError, match="clash with existing ones .*stage3_unit1_conv_weight"):
        ds.attach_heads(small_net(), ["stage1_unit1_relu_output"], CLASSES, names=["stage3_unit1"])


def test_custom_head_builder_and_names():
    def linear_head(data, num_classes, name):
        return classifier(data, num_classes, name=name + "_fc")
    sym = ds.attach_heads(small_net(), ["stage2_unit1_relu_output"], CLASSES,
                          head_builder=linear_head, names=["aux1"])
    assert sym.list_outputs()[1] == "aux1_softmax_output"
    assert "aux1_fc_weight" in sym.list_arguments()
    wide = functools.partial(ds.conv_head, num_filter=24)
    sym = ds.attach_heads(small_net(), ["stage2_unit1_relu_output"], CLASSES, head_builder=wide)
    arg_shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=(1,) + SHAPE)[0]))
    assert arg_shapes["dsn_stage2_unit1_relu_conv_weight"] == (24, 16, 3, 3)


def test_json_round_trip_keeps_heads_and_shared_label():
    sym = ds.attach_heads(small_net(), HEADS, CLASSES)
    loaded = mx.sym.load_json(sym.tojson())
    assert loaded.tojson() == sym.tojson()
    assert loaded.list_outputs() == sym.list_outputs()
    assert loaded.list_arguments().count("softmax_label") == 1
    assert loaded.attr_dict()["dsn_stage2_unit1_relu_softmax"]["grad_scale"] == "0.5"


def test_attach_points_lists_feature_maps_with_shapes():
    points = ds.attach_points(small_net(), SHAPE)
    assert points["stage1_unit1_relu_output"] == (8, 16, 16)
    assert points["stage3_unit1_relu_output"] == (32, 4, 4)
    assert "fc1_output" not in points and "stem_conv_weight" not in points
    relus = ds.attach_points(small_net(), SHAPE, pattern="stage*_relu_output")
    assert list(relus) == ["stage1_unit1_relu_output", "stage2_unit1_relu_output",
                           "stage3_unit1_relu_output"]


def test_parse_heads_forms():
    assert ds.parse_heads("a_output:0.5, b") == {"a_output": 0.5, "b": ds.DEFAULT_WEIGHT}
    assert ds.parse_heads([("a", 1), "b"]) == {"a": 1.0, "b": ds.DEFAULT_WEIGHT}
    assert ds.parse_heads({"a": 0.1}) == {"a": 0.1}


@pytest.mark.parametrize("heads, message", [
    (["stage2_unti1_relu_output"], "no internal output .*did you mean stage2_unit1_relu_output"),
    (["stem_conv_weight"], "is a parameter or input"),
    (["fc1_output"], "not a 4-D feature map"),
    ({"stage2_unit1_relu_output": 0}, "must be > 0"),
    ("stage2_unit1_relu_output:heavy", "must be a number"),
    ([("stage2_unit1_relu_output", 0.3), ("stage2_unit1_relu_output", 0.2)], "given twice"),
    (42, "must be a list"),
])
def test_bad_heads_raise_clear_errors(heads, message):
    with pytest.raises(ValueError, match=message):
        ds.attach_heads(small_net(), heads, CLASSES, image_shape=SHAPE)


def test_head_too_large_for_its_feature_map_is_reported():
    from mxcnn.symbols.googlenet import aux_head  # avg pool 5x5 cannot run on a 4x4 map
    with pytest.raises(ValueError, match="cannot be built on 'stage3_unit1_relu_output'"):
        ds.attach_heads(small_net(), ["stage3_unit1_relu_output"], CLASSES, head_builder=aux_head,
                        image_shape=SHAPE)


def test_network_without_main_softmax_is_rejected():
    logits = small_net().get_internals()["fc1_output"]
    with pytest.raises(ValueError, match="output 0 is SoftmaxOutput"):
        ds.attach_heads(logits, ["stage2_unit1_relu_output"], CLASSES)


def test_registry_option_applies_to_any_network():
    sym = symbols.get_symbol("inception_bn", num_classes=CLASSES, image_shape=(3, 32, 32),
                             deep_supervision="inception3c_output:0.2,inception4e")
    assert sym.list_outputs() == ["softmax_output", "dsn_inception3c_softmax_output",
                                  "dsn_inception4e_softmax_output"]
    assert sym.infer_shape(data=(1, 3, 32, 32))[1] == [(1, CLASSES)] * 3
    plain = symbols.get_symbol("inception_bn", num_classes=CLASSES, image_shape=(3, 32, 32))
    assert ds.main_output(sym).tojson() == plain.tojson()
    with pytest.raises(ValueError, match="no internal output 'nowhere'"):
        symbols.get_symbol("inception_bn", image_shape=(3, 32, 32), deep_supervision=["nowhere"])
    with pytest.raises(ValueError, match="does not take option"):  # the unknown-option check
        symbols.get_symbol("inception_bn", image_shape=(3, 32, 32), deep_supervison=["x"])
