"""airbench94's network (Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU",
arXiv:2404.00498, Sec. 3): a fast CIFAR-10 CNN for short schedules (``--preset fast``).

Layout (:data:`LAYOUT`), for a 3 x 32 x 32 input::

    whiten   2x2 conv, no padding, 2*C*2*2 = 24 filters + bias, FROZEN weight    -> 24 x 31 x 31
             GELU
    block1   3x3 conv 64 -> 2x2 max pool -> BN -> GELU -> 3x3 conv 64 -> BN -> GELU -> 64 x 15 x 15
    block2   the same with 256 filters                                          -> 256 x 7 x 7
    block3   the same with 256 filters                                          -> 256 x 3 x 3
    head     3x3 max pool (global) -> fc1 (no bias) -> x 1/9 -> SoftmaxOutput 'softmax'

Eight weight layers (7 convolutions and fc1), 1,972,792 learnable parameters at 10 classes
(BN betas and the fixed gammas counted, as ``count_params`` counts every argument).
BatchNorm keeps gamma fixed at 1 (``fix_gamma=True``; the paper freezes the BN scales);
the paper's BN momentum 0.6 (PyTorch's convention) is MXNet's ``momentum=0.4``.

Initialisation (the paper's Sec. 3.2), carried by the symbol as ``__init__`` attributes so
that any ``mx.init`` initializer (and ``train.engines.initial_params``) applies it:

* block convolutions: :class:`PartialDirac`, PyTorch's default uniform U(+-1/sqrt(fan_in))
  with the first ``in_channels`` filters replaced by the identity (dirac) kernel;
* fc1: U(+-1/sqrt(256)), PyTorch's default for a Linear layer;
* the whitening weight is frozen (``BlockGrad`` on it, ``lr_mult=0``, ``wd_mult=0``) and
  marked ``__data_init__='patch_whitening'``: the trainer (``train/data_init.py``) sets it
  from training images with :func:`whitening_weight` (the eigenvectors of the 2x2 patch
  covariance scaled by 1/sqrt(eigenvalue + 5e-4), and their negatives).  Without data the
  initializer's own random filters stay (a frozen random projection).

Checkpoints are plain MXNet: ``whiten_conv_weight`` is an ordinary argument saved in the
``.params`` file; loading needs neither this module nor the data.
Shape contract: Variable ``data`` (N, C, H, W) -> ``SoftmaxOutput`` ``softmax`` (N, num_classes).
"""
from collections.abc import Sequence

import mxnet as mx
import numpy as np
import numpy.typing as npt

from mxcnn import common
from mxcnn.symbols import layers

#: (name, output channels) of the three conv groups (the paper's widths 64/256/256).
LAYOUT = (("block1", 64), ("block2", 256), ("block3", 256))
#: Side of the whitening patches (the paper's 2x2) and the eigenvalue floor of its whitening.
WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4
#: The logits are multiplied by this (the paper's output scaling, 1/9).
LOGIT_SCALE = 1.0 / 9
#: BatchNorm: the paper's momentum 0.6 in PyTorch's convention = MXNet momentum 0.4.
BN_MOMENTUM = 0.4
#: cuDNN's smallest epsilon (the paper uses 1e-12; 1e-5 keeps the GPU path valid).
BN_EPS = 1e-5
#: The attribute value that asks the trainer for data-dependent initialisation.
DATA_INIT = "patch_whitening"

VARIANTS = {
    "airbench": "airbench94 (Jordan 2024): 2x2 patch-whitening conv (frozen) + 3 conv groups of "
                "widths 64/256/256 with BN and GELU; no depth option (num_layers None or 8); "
                "widths=(a,b,c) to rescale; 1.97M parameters at 10 classes",
}


@mx.init.register
class PartialDirac(mx.init.Initializer):
    """U(+-1/sqrt(fan_in)) (PyTorch's Conv2d default), then filter i = the identity on input
    channel i for i < min(out, in) channels (torch.nn.init.dirac_ on the first ``in`` filters)."""

    def _init_weight(self, name, arr):
        out_c, in_c = arr.shape[:2]
        fan_in = int(np.prod(arr.shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        weight = np.random.uniform(-bound, bound, size=arr.shape).astype(np.float32)
        kh, kw = arr.shape[2] // 2, arr.shape[3] // 2
        for i in range(min(out_c, in_c)):
            weight[i] = 0.0
            weight[i, i, kh, kw] = 1.0
        arr[:] = weight


def whitening_weight(images: npt.ArrayLike, kernel: int = WHITEN_KERNEL,
                     eps: float = WHITEN_EPS) -> np.ndarray:
    """Frozen first-layer filters from ``images`` (N, C, H, W float, normalised as trained).

    The k x k patches' uncentred covariance (C*k*k square) has eigenpairs (l_j, v_j);
    filter j is v_j / sqrt(l_j + eps) and filter j + C*k*k its negative, so the layer's
    output is white on the data and GELU sees both signs.  Returns float32
    (2*C*k*k, C, k, k), the shape of ``whiten_conv_weight``.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[2] < kernel or x.shape[3] < kernel:
        raise common.UserError("whitening needs (N, C, H, W) images of at least %dx%d, got %s"
                               % (kernel, kernel, x.shape))
    n, c, h, w = x.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
    cov = patches.T @ patches / len(patches)
    values, vectors = np.linalg.eigh(cov)
    filters = (vectors.T / np.sqrt(np.maximum(values, 0.0) + eps)[:, None])
    filters = filters.reshape(-1, c, kernel, kernel)
    return np.concatenate([filters, -filters]).astype(np.float32)


def _layout_barrier(data, name):
    """A no-op reshape, which oneDNN builds hand over in the plain NCHW layout.

    After a convolution with 24 input channels (the whitening output) oneDNN 2.x picks the
    8-channel blocked layout; the BatchNorm backward then meets a 16-blocked gradient and runs
    its reference kernel (``bnorm_ref:any``), measured at 25% of an airbench training step
    on AVX-512 (DNNL_VERBOSE).  Through this reshape it stays on ``bnorm_jit``.  The trainer's
    graph on AVX-512 removes the cause (``graph.channel_pad`` pads the whitening to 32
    channels); the barrier keeps the symbol as built, which plain MXNet trains, off ``ref``.
    """
    return mx.sym.reshape(data, shape=(0, 0, 0, 0), name=name)


def _bn(data, name, bn_mom):
    return mx.sym.BatchNorm(data, fix_gamma=True, eps=BN_EPS, momentum=bn_mom, name=name)


def _gelu(data, name):
    return mx.sym.LeakyReLU(data, act_type="gelu", name=name)


def conv_group(data: mx.sym.Symbol, in_filter: int, num_filter: int, name: str, bn_mom: float = BN_MOMENTUM,
               workspace: int = layers.WORKSPACE) -> mx.sym.Symbol:
    """conv -> 2x2 max pool -> BN -> GELU -> conv -> BN -> GELU; (N, C, H, W) -> (N, F, H/2, W/2).

    ``in_filter`` (the input channels) decides whether a layout barrier follows the pooling.
    """
    x = data
    for k, _width_in in ((1, in_filter), (2, num_filter)):
        weight = mx.sym.Variable("%s_conv%d_weight" % (name, k), init=PartialDirac())
        x = mx.sym.Convolution(x, weight=weight, num_filter=num_filter, kernel=(3, 3), pad=(1, 1),
                               no_bias=True, workspace=workspace, name="%s_conv%d" % (name, k))
        if k == 1:
            x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name=name + "_pool")
            if in_filter % 16:
                x = _layout_barrier(x, name + "_plain")
        x = _gelu(_bn(x, "%s_bn%d" % (name, k), bn_mom), "%s_gelu%d" % (name, k))
    return x


def whiten(data: mx.sym.Symbol, channels: int, kernel: int = WHITEN_KERNEL,
           workspace: int = layers.WORKSPACE) -> mx.sym.Symbol:
    """The frozen k x k patch-whitening conv (2*C*k*k filters, trainable bias), then GELU."""
    weight = mx.sym.Variable("whiten_conv_weight", lr_mult=0.0, wd_mult=0.0,
                             __data_init__=DATA_INIT)
    x = mx.sym.Convolution(data, weight=mx.sym.BlockGrad(weight, name="whiten_frozen"),
                           num_filter=2 * channels * kernel * kernel, kernel=(kernel, kernel),
                           no_bias=False, workspace=workspace, name="whiten_conv")
    return _gelu(x, "whiten_gelu")


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), widths: Sequence[int] | None = None,
               bn_mom: float = BN_MOMENTUM, workspace: int = layers.WORKSPACE) -> mx.sym.Symbol:
    """airbench94's network for ``image_shape`` (C, H, W); ``widths`` overrides (64, 256, 256)."""
    image_shape = layers.as_image_shape(image_shape)
    if num_layers not in (None, 8):
        raise common.UserError("airbench has one depth (8 weight layers); leave num_layers unset, "
                               "got %r" % (num_layers,))
    widths = tuple(width for _, width in LAYOUT) if widths is None else tuple(widths)
    if len(widths) != len(LAYOUT) or any(int(w) != w or w < 1 for w in widths):
        raise common.UserError("widths must be %d positive integers, e.g. (64, 256, 256), got %r"
                               % (len(LAYOUT), widths))
    if not 0.0 <= bn_mom < 1.0:
        raise common.UserError("bn_mom must be in [0, 1), got %r" % (bn_mom,))
    side = min(image_shape[1:]) - WHITEN_KERNEL + 1
    if side // 2 ** len(LAYOUT) < 1:
        raise common.UserError("airbench needs inputs of at least %dx%d, got %dx%d"
                               % ((2 ** len(LAYOUT) + 1,) * 2 + tuple(image_shape[1:])))
    channels = image_shape[0]
    x = whiten(mx.sym.Variable("data"), channels, workspace=workspace)
    in_filter = 2 * channels * WHITEN_KERNEL ** 2
    for (name, _), width in zip(LAYOUT, widths):
        x = conv_group(x, in_filter, int(width), name, bn_mom, workspace)
        in_filter = int(width)
    x = mx.sym.Pooling(x, global_pool=True, pool_type="max", kernel=(1, 1), name="pool_global")
    x = mx.sym.Flatten(x, name="fc1_flatten")
    fc_weight = mx.sym.Variable("fc1_weight", init=mx.init.Uniform(1.0 / np.sqrt(in_filter)))
    logits = mx.sym.FullyConnected(x, weight=fc_weight, num_hidden=int(num_classes), no_bias=True,
                                   name="fc1")
    return layers.softmax_output(mx.sym._internal._mul_scalar(logits, scalar=LOGIT_SCALE, name="fc1_scale"))
