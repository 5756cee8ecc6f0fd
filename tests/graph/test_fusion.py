"""graph.fusion: BatchNorm+ReLU fusion keeps the interface, the values and the gradients."""

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.graph import fusion, memonger, training
from mxcnn.train import fit
from tests.graph.graph_helpers import ops

BATCH = 4
SHAPE = (BATCH, 3, 32, 32)

pytestmark = pytest.mark.skipif(not fusion.available(), reason="needs MXNet with oneDNN")


def _forward_backward(sym, arg_params, aux_params, data, label):
    exe = sym.simple_bind(mx.cpu(), data=data.shape, softmax_label=label.shape)
    for name, value in arg_params.items():
        value.copyto(exe.arg_dict[name])
    for name, value in aux_params.items():
        value.copyto(exe.aux_dict[name])
    exe.arg_dict["data"][:] = data
    exe.arg_dict["softmax_label"][:] = label
    exe.forward(is_train=True)
    exe.backward()
    grads = {name: exe.grad_dict[name].asnumpy() for name in arg_params}
    aux = {name: exe.aux_dict[name].asnumpy() for name in aux_params}
    return exe.outputs[0].asnumpy(), grads, aux


# (network, options, BN+ReLU pairs fused for data=SHAPE).  Every count is asserted: a rewrite
# that silently fused nothing would otherwise pass the exactness check trivially.  Only the
# counts depend on graph.fusion's rules (CHANNEL_BLOCK, BLOCKED_PRODUCERS), not on the CPU.
CASES = [
    ("resnet", dict(num_layers=20), 9),                 # one per unit; the stem's ReLU also
                                                        # feeds an identity shortcut (a sum)
    ("preact_resnet", dict(num_layers=20), 18),
    ("preact_resnet", dict(num_layers=164), 162),
    ("wrn", dict(num_layers=16, widen_factor=4), 12),
    ("resnext", dict(num_layers=29, cardinality=2, bottleneck_width=16), 19),
    # 4, 8, 16 channels per group by stage: only the pairs away from the grouped convs of
    # stages 1-2 (narrower than a block: the fused op failed to bind there) are fused
    ("resnext", dict(num_layers=29, cardinality=8, bottleneck_width=4), 7),
    ("mobilenet", dict(multiplier=0.5), 26),            # all 27 but the one before the pool
    ("vgg", dict(num_layers=11, batch_norm=True), 3),   # only the ReLUs that feed a conv
    # Expected to fuse nothing (the README says so): each layer's first BatchNorm reads a
    # Concat (MXNet's plain-layout kernel, not a BLOCKED_PRODUCER) and the bottleneck's
    # BatchNorm feeds a 3x3 conv of growth_rate=12 filters, no multiple of CHANNEL_BLOCK
    # (growth_rate=16 fuses 19 pairs).  The case still checks the graph is left unchanged.
    ("densenet", dict(num_layers=40, growth_rate=12, bottleneck=True), 0),
]


@pytest.mark.parametrize("network,options,expected", CASES,
                         ids=["%s-%s" % (c[0], c[1].get("num_layers", "")) for c in CASES])
def test_fused_training_step_is_exact(network, options, expected):
    sym = symbols.get_symbol(network, num_classes=10, **options)
    fused, count = fusion.fuse_bn_relu(sym, data=SHAPE)
    assert count == expected
    if expected == 0:
        assert fused is sym
    assert fused.list_arguments() == sym.list_arguments()
    assert fused.list_auxiliary_states() == sym.list_auxiliary_states()
    assert fused.list_outputs() == sym.list_outputs()
    assert ops(fused).count(fusion.FUSED_OP) == count
    mx.random.seed(1)
    arg_params, aux_params = fit.initial_params(sym, SHAPE)
    data = mx.nd.random.uniform(-1, 1, SHAPE)
    label = mx.nd.array(np.arange(BATCH) % 10)
    out_ref, grads_ref, aux_ref = _forward_backward(sym, arg_params, aux_params, data, label)
    out, grads, aux = _forward_backward(fused, arg_params, aux_params, data, label)
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-6)
    for name in grads_ref:
        scale = np.abs(grads_ref[name]).max() + 1e-12
        assert np.abs(grads[name] - grads_ref[name]).max() <= 1e-4 * scale, name
    for name in aux_ref:
        np.testing.assert_allclose(aux[name], aux_ref[name], rtol=1e-5, atol=1e-6)


def _bn_relu_then(consumer, channels=16):
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=channels, kernel=(3, 3), pad=(1, 1),
                           no_bias=True, name="c1")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn1")
    x = mx.sym.Activation(x, act_type="relu", name="relu1")
    if consumer == "conv":
        x = mx.sym.Convolution(x, num_filter=16, kernel=(3, 3), pad=(1, 1), name="c2")
    elif consumer == "conv12":
        x = mx.sym.Convolution(x, num_filter=12, kernel=(3, 3), pad=(1, 1), name="c2")
    elif consumer == "add":
        x = x + x
    x = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), pool_type="avg", name="pool")
    x = mx.sym.FullyConnected(mx.sym.flatten(x), num_hidden=10, name="fc1")
    return mx.sym.SoftmaxOutput(x, name="softmax")


@pytest.mark.parametrize("consumer,channels,fused", [
    ("conv", 16, 1),
    ("pool", 16, 0),     # a Pooling gradient breaks MXNet's fused backward
    ("add", 16, 0),      # so does an elementwise-sum gradient
    ("conv12", 16, 0),   # a consumer whose width is no multiple of the oneDNN block
    ("conv", 24, 0),     # a BatchNorm whose width is no multiple of the oneDNN block
])
def test_only_safe_pairs_are_fused(consumer, channels, fused):
    sym = _bn_relu_then(consumer, channels)
    result, count = fusion.fuse_bn_relu(sym, data=(2, 3, 8, 8))
    assert count == fused
    exe = result.simple_bind(mx.cpu(), data=(2, 3, 8, 8), softmax_label=(2,))
    exe.forward(is_train=True)
    exe.backward()
    mx.nd.waitall()  # the unsafe cases raise here when fused


def test_nothing_fused_without_shapes_or_with_a_memonger_plan(tmp_path, monkeypatch):
    sym = symbols.get_symbol("preact_resnet", num_classes=10, num_layers=20, bottleneck=False,
                             memonger=True)
    assert fusion.fuse_bn_relu(sym) == (sym, 0)
    monkeypatch.setenv("MXCNN_CACHE_DIR", str(tmp_path))
    planned = memonger.plan(sym, data=(8, 3, 32, 32))
    assert fusion.fuse_bn_relu(planned, data=(8, 3, 32, 32))[1] == 0


def test_trainer_binds_fused_graph_and_saves_the_unfused_one(tmp_path):
    sym = symbols.get_symbol("resnet", num_classes=10, num_layers=8)
    contexts = [mx.cpu()]
    assert fusion.FUSED_OP in ops(training.training_graph(sym, contexts, (8, 3, 32, 32)))
    assert fusion.FUSED_OP not in ops(training.training_graph(sym, contexts, (8, 3, 32, 32), fuse=False))
    rs = np.random.RandomState(0)
    x = rs.uniform(-1, 1, (16, 3, 32, 32)).astype("f")
    y = (np.arange(16) % 10).astype("f")
    train = mx.io.NDArrayIter(x, y, batch_size=8, label_name="softmax_label")
    cfg = fit.FitConfig(batch_size=8, num_classes=10, num_epochs=1, iters_per_epoch=2,
                        disp_batches=0, plot=False, progress_bar=False,
                        model_prefix=str(tmp_path / "m"))
    fit.fit(sym, train, None, cfg)
    saved = mx.sym.load(str(tmp_path / "m-symbol.json"))
    assert fusion.FUSED_OP not in ops(saved)
    assert saved.tojson() == sym.tojson()
