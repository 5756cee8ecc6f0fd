"""What the training-engine tests share: a tiny network, toy data and a fit configuration."""
import mxnet as mx
import numpy as np

from mxcnn.inference import checkpoint as ckpt
from mxcnn.train import fit

NUM_CLASSES = 4


def tiny_net(batch_norm=True, dropout=0.0, aux_weight=None):
    """conv(8) [-> BN] -> relu -> global pool -> [dropout] -> fc; optional deep-supervision head."""
    x = mx.sym.var("data")
    x = mx.sym.Convolution(x, num_filter=8, kernel=(3, 3), pad=(1, 1), name="c1")
    if batch_norm:
        x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn1")
    trunk = mx.sym.Activation(x, act_type="relu", name="relu1")
    x = mx.sym.Pooling(trunk, global_pool=True, kernel=(1, 1), pool_type="avg", name="pool")
    x = mx.sym.flatten(x)
    if dropout:
        x = mx.sym.Dropout(x, p=dropout, name="drop")
    x = mx.sym.FullyConnected(x, num_hidden=NUM_CLASSES, name="fc1")
    label = mx.sym.var("softmax_label")
    main = mx.sym.SoftmaxOutput(x, label, name="softmax")
    if aux_weight is None:
        return main
    y = mx.sym.Pooling(trunk, kernel=(2, 2), stride=(2, 2), pool_type="max", name="auxpool")
    y = mx.sym.FullyConnected(mx.sym.flatten(y), num_hidden=NUM_CLASSES, name="aux_fc")
    aux = mx.sym.SoftmaxOutput(y, label, grad_scale=aux_weight, name="aux_softmax")
    return mx.sym.Group([main, aux])


def toy_data(n=64, seed=0):
    rs = np.random.RandomState(seed)
    y = (np.arange(n) % NUM_CLASSES).astype("f")
    x = rs.randn(n, 3, 8, 8).astype("f") * 0.5
    x[:, 0] += y[:, None, None]  # learnable: channel 0 encodes the class
    return x, y


def iters(batch_size=16, n=64):
    x, y = toy_data(n)
    train = mx.io.NDArrayIter(x, y, batch_size=batch_size, label_name="softmax_label")
    val = mx.io.NDArrayIter(x[:32], y[:32], batch_size=batch_size, label_name="softmax_label")
    return train, val


def config(tmp_path=None, **kw):
    base = dict(batch_size=16, num_classes=NUM_CLASSES, num_epochs=2, iters_per_epoch=4,
                optimizer_params={"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4},
                lr_scheduler_args=dict(mode="step", step_epochs=[1], factor=0.5),
                disp_batches=0, plot=False, progress_bar=False,
                model_prefix=None if tmp_path is None else str(tmp_path / "m"))
    base.update(kw)
    return fit.FitConfig(**base)


def params_after(sym, cfg, train=None, val=None):
    if train is None:
        train, val = iters(cfg.batch_size)
    fit.fit(sym, train, val, cfg)
    return ckpt.load_params(cfg.model_prefix, cfg.num_epochs)


def assert_params_close(a, b, atol):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name].asnumpy(), b[name].asnumpy(), atol=atol, rtol=0,
                                   err_msg=name)
