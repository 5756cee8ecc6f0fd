"""Building blocks shared by every family: convolution/BN/activation chains,
residual shortcuts, squeeze-and-excitation, pooling and classifier heads.

Every function takes and returns an ``mx.sym.Symbol`` laid out NCHW and names
its operators ``<name>_<part>`` so parameter names stay stable across versions
(checkpoints depend on them).  Families import from here instead of writing
their own copies.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import mxnet as mx

from mxcnn import common

#: BatchNorm defaults used across the project (MXNet's examples use the same).
BN_MOMENTUM = 0.9
BN_EPS = 2e-5
#: Convolution workspace in MB (MXNet's default is 1024; 256 matches its examples).
WORKSPACE = 256

CIFAR_MAX_SIDE = 64  # inputs no larger than this use the CIFAR-style stem by default


def as_image_shape(image_shape: str | Sequence[int]) -> tuple[int, int, int]:
    """Normalise ``(3, 32, 32)``, ``[3, 32, 32]`` or ``"3,32,32"`` to a tuple of 3 ints."""
    given = image_shape
    parts = given.replace("x", ",").split(",") if isinstance(given, str) else given
    try:  # every part a whole number: "3,x,32" and (3, 32.5, 32) are refused, not shortened
        image_shape = tuple(int(v) for v in parts)
        whole = all(float(v) == int(v) for v in parts)
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise common.UserError("image_shape %r is not of the form C,H,W (e.g. 3,32,32)" % (given,))
    if len(image_shape) != 3 or min(image_shape) <= 0:
        raise common.UserError("image_shape must be (channels, height, width) with positive sizes, got %r"
                               % (image_shape,))
    return image_shape


def infer_style(image_shape: Sequence[int], style: str | None = None) -> str:
    """Return ``'cifar'`` or ``'imagenet'``: explicit ``style`` wins, else chosen by input side."""
    if style is not None:
        if style not in ("cifar", "imagenet"):
            raise common.UserError("style must be 'cifar' or 'imagenet', got %r" % (style,))
        return style
    return "cifar" if max(image_shape[1:]) <= CIFAR_MAX_SIDE else "imagenet"


def conv(data: mx.sym.Symbol, num_filter: int, kernel: int | tuple[int, int] = 3,
         stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] | None = None,
         name: str | None = None, num_group: int = 1, no_bias: bool = True,
         dilate: int | tuple[int, int] = 1, workspace: int = WORKSPACE) -> mx.sym.Symbol:
    """Convolution with 'same' padding by default; ``kernel``/``stride``/``pad`` take ints or pairs."""
    kernel = _pair(kernel)
    if pad is None:
        pad = ((kernel[0] - 1) // 2 * _pair(dilate)[0], (kernel[1] - 1) // 2 * _pair(dilate)[1])
    return mx.sym.Convolution(data=data, num_filter=int(num_filter), kernel=kernel,
                              stride=_pair(stride), pad=_pair(pad), dilate=_pair(dilate),
                              num_group=int(num_group), no_bias=no_bias, workspace=workspace,
                              name=name)


def batchnorm(data: mx.sym.Symbol, name: str, bn_mom: float = BN_MOMENTUM, eps: float = BN_EPS,
              fix_gamma: bool = False) -> mx.sym.Symbol:
    """BatchNorm over channels (axis 1) with the project's momentum and epsilon."""
    return mx.sym.BatchNorm(data=data, fix_gamma=fix_gamma, eps=eps, momentum=bn_mom, name=name)


def activation(data: mx.sym.Symbol, act_type: str | None, name: str) -> mx.sym.Symbol:
    """``relu``, ``relu6``, ``sigmoid``, ``tanh``, ``softrelu``, ``hard_sigmoid`` or ``None``."""
    if act_type is None:
        return data
    if act_type == "relu6":
        return mx.sym.clip(data, a_min=0.0, a_max=6.0, name=name)
    if act_type == "hard_sigmoid":
        return mx.sym.hard_sigmoid(data, name=name)
    return mx.sym.Activation(data=data, act_type=act_type, name=name)


def conv_bn_act(data: mx.sym.Symbol, num_filter: int, kernel: int | tuple[int, int] = 3,
                stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] | None = None,
                name: str = "conv", act_type: str | None = "relu", num_group: int = 1,
                bn_mom: float = BN_MOMENTUM, workspace: int = WORKSPACE) -> mx.sym.Symbol:
    """Post-activation block conv -> BN -> act (ResNet v1, Inception-BN, MobileNet).

    Names: ``<name>_conv``, ``<name>_bn``, ``<name>_<act_type>``.
    """
    x = conv(data, num_filter, kernel, stride, pad, name=name + "_conv", num_group=num_group,
             workspace=workspace)
    x = batchnorm(x, name=name + "_bn", bn_mom=bn_mom)
    return activation(x, act_type, name=name + "_" + str(act_type))


def conv_act(data: mx.sym.Symbol, num_filter: int, kernel: int | tuple[int, int] = 3,
             stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] | None = None,
             name: str = "conv", act_type: str | None = "relu", num_group: int = 1,
             workspace: int = WORKSPACE) -> mx.sym.Symbol:
    """Conv (with bias) -> act, the BN-free form of AlexNet, VGG and the original GoogLeNet."""
    x = conv(data, num_filter, kernel, stride, pad, name=name + "_conv", num_group=num_group,
             no_bias=False, workspace=workspace)
    return activation(x, act_type, name=name + "_" + str(act_type))


def bn_act(data: mx.sym.Symbol, name: str, act_type: str | None = "relu",
           bn_mom: float = BN_MOMENTUM) -> mx.sym.Symbol:
    """BN -> act, the pre-activation of PreAct ResNet and DenseNet (``<name>_bn``, ``<name>_<act>``)."""
    x = batchnorm(data, name=name + "_bn", bn_mom=bn_mom)
    return activation(x, act_type, name=name + "_" + str(act_type))


def bn_act_conv(data: mx.sym.Symbol, num_filter: int, kernel: int | tuple[int, int] = 3,
                stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] | None = None,
                name: str = "conv", act_type: str | None = "relu", num_group: int = 1,
                bn_mom: float = BN_MOMENTUM, workspace: int = WORKSPACE) -> mx.sym.Symbol:
    """Pre-activation block BN -> act -> conv (He et al. 2016b, DenseNet)."""
    x = bn_act(data, name=name, act_type=act_type, bn_mom=bn_mom)
    return conv(x, num_filter, kernel, stride, pad, name=name + "_conv", num_group=num_group,
                workspace=workspace)


def shortcut(data: mx.sym.Symbol, in_filter: int, num_filter: int, stride: int, shortcut_type: str,
             name: str, bn: bool = True, bn_mom: float = BN_MOMENTUM,
             workspace: int = WORKSPACE) -> mx.sym.Symbol:
    """Residual shortcut (He et al. 2016, Sec. 3.3 options A/B/C).

    ``A``: identity; where channels grow, subsample by ``stride`` and pad the new
    channels with zeros (parameter-free).  ``B``: identity where shapes match, else
    a 1x1 projection.  ``C``: always a 1x1 projection.  Projections are followed by
    BN when ``bn`` (post-activation nets); pre-activation nets pass ``bn=False``.
    Output: (N, num_filter, H/stride, W/stride).
    """
    if shortcut_type not in ("A", "B", "C"):
        raise common.UserError("shortcut_type must be 'A', 'B' or 'C', got %r" % (shortcut_type,))
    dim_match = in_filter == num_filter and stride == 1
    if shortcut_type == "C" or (shortcut_type == "B" and not dim_match):
        x = conv(data, num_filter, kernel=1, stride=stride, pad=0, name=name + "_sc_conv",
                 workspace=workspace)
        return batchnorm(x, name=name + "_sc_bn", bn_mom=bn_mom) if bn else x
    if dim_match:
        return data
    if num_filter < in_filter:
        raise common.UserError("option-A shortcut cannot shrink channels (%d -> %d)" %
                               (in_filter, num_filter))
    x = data
    if stride != 1:
        x = mx.sym.Pooling(x, kernel=(1, 1), stride=_pair(stride), pool_type="max",
                           name=name + "_sc_subsample")
    if num_filter == in_filter:
        return x
    extra = num_filter - in_filter
    zeros = mx.sym.zeros_like(x)
    if extra > in_filter:  # e.g. 16 -> 64 at a bottleneck stage: repeat the zero block first
        zeros = mx.sym.tile(zeros, reps=(1, -(-extra // in_filter), 1, 1))
    zeros = mx.sym.slice_axis(zeros, axis=1, begin=0, end=extra)
    return mx.sym.concat(x, zeros, dim=1, name=name + "_sc_pad")


def squeeze_excitation(data: mx.sym.Symbol, num_filter: int, ratio: int, name: str) -> mx.sym.Symbol:
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from a global-pool bottleneck.

    ``ratio`` is the reduction r (16 in the paper); output has the shape of ``data``.
    """
    squeezed = mx.sym.Pooling(data, global_pool=True, pool_type="avg", kernel=(1, 1),
                              name=name + "_se_pool")
    hidden = max(1, int(num_filter) // int(ratio))
    x = mx.sym.Convolution(squeezed, num_filter=hidden, kernel=(1, 1), name=name + "_se_fc1")
    x = mx.sym.Activation(x, act_type="relu", name=name + "_se_relu")
    x = mx.sym.Convolution(x, num_filter=int(num_filter), kernel=(1, 1), name=name + "_se_fc2")
    gate = mx.sym.Activation(x, act_type="sigmoid", name=name + "_se_sigmoid")
    return mx.sym.broadcast_mul(data, gate, name=name + "_se_scale")


def global_pool(data: mx.sym.Symbol, pool_type: str = "avg", name: str = "pool_global") -> mx.sym.Symbol:
    """Global average (or max) pooling to (N, C, 1, 1)."""
    return mx.sym.Pooling(data, global_pool=True, pool_type=pool_type, kernel=(1, 1), name=name)


def classifier(data: mx.sym.Symbol, num_classes: int, name: str = "fc1", dropout: float = 0.0,
               pool: bool = True) -> mx.sym.Symbol:
    """Global average pool (optional) -> flatten -> dropout (optional) -> FC to ``num_classes``.

    Returns the logits (N, num_classes); wrap with :func:`softmax_output` for training.
    """
    x = global_pool(data, name=name + "_pool") if pool else data
    x = mx.sym.Flatten(x, name=name + "_flatten")
    if dropout:
        x = mx.sym.Dropout(x, p=float(dropout), name=name + "_dropout")
    return mx.sym.FullyConnected(x, num_hidden=int(num_classes), name=name)


def softmax_output(logits: mx.sym.Symbol, name: str = "softmax", grad_scale: float = 1.0) -> mx.sym.Symbol:
    """The training head every checkpoint expects: ``SoftmaxOutput`` over label ``<name>_label``."""
    return mx.sym.SoftmaxOutput(data=logits, name=name, grad_scale=grad_scale)


def tag_mirror_stage(sym: mx.sym.Symbol) -> mx.sym.Symbol:
    """Mark ``sym`` as a candidate cut point for the memory planner (MXNet's ``mirror_stage``).

    The attribute is metadata only: it does not change the computation.
    """
    sym._set_attr(mirror_stage="True")
    return sym


def check_choice(what: str, value: Any, choices: Collection[Any]) -> Any:
    """Raise ``ValueError`` naming ``what`` and listing ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise common.UserError("%s must be one of %s, got %r"
                               % (what, ", ".join(str(c) for c in choices), value))
    return value


def _pair(value):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise common.UserError("expected an int or a pair, got %r" % (value,))
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


def pool(data: mx.sym.Symbol, kernel: int | tuple[int, int], stride: int | tuple[int, int] = 1,
         pad: int | tuple[int, int] = 0, pool_type: str = "max", name: str | None = None,
         ceil_mode: bool = False, count_include_pad: bool = True) -> mx.sym.Symbol:
    """2-D max/avg pooling; ``ceil_mode`` rounds the output size up (Caffe/torchvision
    ``ceil_mode=True``, MXNet ``pooling_convention='full'``), ``count_include_pad=False``
    averages over real pixels only (TensorFlow 'SAME' average pooling)."""
    return mx.sym.Pooling(data, kernel=_pair(kernel), stride=_pair(stride), pad=_pair(pad),
                          pool_type=pool_type, pooling_convention="full" if ceil_mode else "valid",
                          count_include_pad=count_include_pad, name=name)


def concat_branches(branches: Sequence[mx.sym.Symbol], name: str) -> mx.sym.Symbol:
    """Channel-wise concatenation of parallel branches (the Inception module's filter
    concatenation); output ``<name>_output`` is the module's attach point."""
    return mx.sym.concat(*branches, dim=1, name=name)


def fc_act(data: mx.sym.Symbol, num_hidden: int, name: str, act_type: str | None = "relu",
           dropout: float = 0.0) -> mx.sym.Symbol:
    """Hidden fully connected layer -> activation -> dropout (optional): LeNet, AlexNet, VGG heads.

    ``FullyConnected`` flattens (N, C, H, W) input itself.  Names: ``<name>``,
    ``<name>_<act_type>``, ``<name>_dropout``.  Output: (N, num_hidden).
    """
    x = mx.sym.FullyConnected(data, num_hidden=int(num_hidden), name=name)
    x = activation(x, act_type, name=name + "_" + str(act_type))
    if dropout:
        x = mx.sym.Dropout(x, p=float(dropout), name=name + "_dropout")
    return x


def require_min_side(image_shape: Sequence[int], min_side: int, network: str) -> None:
    """Raise ``ValueError`` unless both sides of ``image_shape`` (C, H, W) are at least ``min_side``.

    For networks whose downsampling would otherwise shrink the feature map to nothing.
    """
    if min(image_shape[1:]) < min_side:
        raise common.UserError("%s needs inputs of at least %dx%d pixels, got image_shape %s; "
                               "resize the images or pick a network for smaller inputs"
                               % (network, min_side, min_side, ",".join(str(v) for v in image_shape)))


def check_dropout(network: str, dropout: float) -> float:
    """``dropout`` as a float in [0, 1); ValueError naming ``network`` otherwise."""
    try:
        value = float(dropout)
    except (TypeError, ValueError):
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise common.UserError("%s dropout must be in [0, 1), got %r" % (network, dropout))
    return value
