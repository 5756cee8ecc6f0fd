"""Shared by the graph-pass tests: a rewritten training graph must train as the original."""
import mxnet as mx
import numpy as np
import pytest

from graph import channel_pad
from train import fit


def _step(sym, arg_params, aux_params, data, label, dtype="float32"):
    """One forward+backward of ``sym``: (output, {arg: grad as float64}, {aux: value})."""
    exe = sym.simple_bind(mx.cpu(), data=data.shape, softmax_label=label.shape,
                          type_dict={"data": dtype})
    for name, value in list(arg_params.items()) + list(aux_params.items()):
        (exe.arg_dict[name] if name in exe.arg_dict else exe.aux_dict[name])[:] = value.astype(dtype)
    exe.arg_dict["data"][:] = data.astype(dtype)
    exe.arg_dict["softmax_label"][:] = label.astype(dtype)
    exe.forward(is_train=True)
    exe.backward()
    return (exe.outputs[0].asnumpy(),
            {n: exe.grad_dict[n].asnumpy().astype("f8") for n in arg_params},
            {n: exe.aux_dict[n].asnumpy() for n in aux_params})


def _same_training_step(sym, rewritten, shape, seed):
    """Assert one training step of ``rewritten`` gives ``sym``'s output, gradients and BN
    statistics on random data of ``shape`` (N, C, H, W), in float tolerance (statistics a
    graph.channel_pad graph holds padded are compared unpadded).

    A gradient may differ by 1e-4 of its size, or by 3x today's float32 error against
    float64 (ill-conditioned gradients, e.g. MobileNet's stem BatchNorm at batch 4, are off
    by several % in float32 whichever kernels sum them).
    """
    mx.random.seed(seed)
    arg_params, aux_params = fit.initial_params(sym, shape)
    data = mx.nd.random.uniform(-1, 1, shape)
    label = mx.nd.array(np.arange(shape[0]) % 10)
    out_ref, grads_ref, aux_ref = _step(sym, arg_params, aux_params, data, label)
    padding = channel_pad.AuxPadding.of(rewritten)  # graph.channel_pad's padded statistics
    out, grads, aux = _step(rewritten, arg_params, padding.pad_params(aux_params), data, label)
    aux = {name: padding.unpad(name, mx.nd.array(value)).asnumpy() if name in padding.segments
           else value for name, value in aux.items()}
    _, grads64, _ = _step(sym, arg_params, aux_params, data, label, "float64")
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-6)
    for name in grads_ref:
        today = np.abs(grads_ref[name] - grads64[name]).max()
        tolerance = max(1e-4 * (np.abs(grads_ref[name]).max() + 1e-12), 3 * today)
        assert np.abs(grads[name] - grads_ref[name]).max() <= tolerance, name
    for name in aux_ref:
        np.testing.assert_allclose(aux[name], aux_ref[name], rtol=1e-5, atol=1e-6)


@pytest.fixture
def same_training_step():
    return _same_training_step
