"""Inception-BN ("Inception-v2"; Ioffe & Szegedy 2015, "Batch Normalization", arXiv:1502.03167,
Sec. 4.1 and Fig. 5), laid out as MXNet's example/image-classification/symbols/inception-bn.py.

Changes from GoogLeNet: BN after every convolution (conv -> BN -> ReLU, no bias), each 5x5
convolution replaced by two 3x3, average or max pooling in the pool branch, and stride-2
"B" modules (3x3/2 | double 3x3/2 | max pool 3x3/2, no 1x1 branch) instead of pooling
layers between stages.  No LRN, no auxiliary heads, no dropout by default.

``style='imagenet'`` (224 input -> 7x7 before the global pool; pools round up so the stages
run at 28/14/7 as in the paper's table); ``style='cifar'`` (default for sides <= 64) is
MXNet's small variant for 28-32 px inputs: a 3x3 conv with 96 filters, then "simple" modules
(1x1 | 3x3) and "downsample" modules (3x3/2 conv | 3x3/2 max pool).  Input (N, C, H, W) ->
``softmax`` over ``num_classes``; module ``<name>`` outputs ``<name>_output``.
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols.layers import (
    as_image_shape,
    check_dropout,
    classifier,
    concat_branches,
    conv_bn_act,
    infer_style,
    pool,
    softmax_output,
)

VARIANTS = {"inception_bn": "Inception-BN (Ioffe & Szegedy 2015); num_layers must be None; "
                            "style 'imagenet' (224) or 'cifar' (MXNet's small variant)"}


def module_a(data: mx.sym.Symbol, name: str, n1: int, n3r: int, n3: int, nd3r: int, nd3: int, pool_type: str,
             proj: int) -> mx.sym.Symbol:
    """1x1 | 1x1->3x3 | 1x1->3x3->3x3 | 3x3 pool->1x1; (N, C, H, W) -> (N, n1+n3+nd3+proj, H, W)."""
    b1 = conv_bn_act(data, n1, kernel=1, name=name + "_1x1")
    b2 = conv_bn_act(data, n3r, kernel=1, name=name + "_3x3_reduce")
    b2 = conv_bn_act(b2, n3, kernel=3, name=name + "_3x3")
    b3 = conv_bn_act(data, nd3r, kernel=1, name=name + "_double_3x3_reduce")
    b3 = conv_bn_act(b3, nd3, kernel=3, name=name + "_double_3x3_0")
    b3 = conv_bn_act(b3, nd3, kernel=3, name=name + "_double_3x3_1")
    b4 = pool(data, 3, 1, 1, pool_type, name=name + "_pool")
    b4 = conv_bn_act(b4, proj, kernel=1, name=name + "_proj")
    return concat_branches([b1, b2, b3, b4], name=name)


def module_b(data: mx.sym.Symbol, name: str, n3r: int, n3: int, nd3r: int, nd3: int) -> mx.sym.Symbol:
    """Grid reduction: 1x1->3x3/2 | 1x1->3x3->3x3/2 | max pool 3x3/2;
    (N, C, H, W) -> (N, n3+nd3+C, ceil(H/2), ceil(W/2))."""
    b1 = conv_bn_act(data, n3r, kernel=1, name=name + "_3x3_reduce")
    b1 = conv_bn_act(b1, n3, kernel=3, stride=2, name=name + "_3x3")
    b2 = conv_bn_act(data, nd3r, kernel=1, name=name + "_double_3x3_reduce")
    b2 = conv_bn_act(b2, nd3, kernel=3, name=name + "_double_3x3_0")
    b2 = conv_bn_act(b2, nd3, kernel=3, stride=2, name=name + "_double_3x3_1")
    b3 = pool(data, 3, 2, 1, "max", name=name + "_pool")
    return concat_branches([b1, b2, b3], name=name)


def simple_module(data: mx.sym.Symbol, name: str, n1: int, n3: int) -> mx.sym.Symbol:
    """Small variant: 1x1 | 3x3; (N, C, H, W) -> (N, n1+n3, H, W)."""
    b1 = conv_bn_act(data, n1, kernel=1, name=name + "_1x1")
    b2 = conv_bn_act(data, n3, kernel=3, name=name + "_3x3")
    return concat_branches([b1, b2], name=name)


def downsample_module(data: mx.sym.Symbol, name: str, n3: int) -> mx.sym.Symbol:
    """Small variant: 3x3/2 conv | 3x3/2 max pool; (N, C, H, W) -> (N, n3+C, H/2, W/2)."""
    b1 = conv_bn_act(data, n3, kernel=3, stride=2, name=name + "_3x3")
    b2 = pool(data, 3, 2, 1, "max", name=name + "_pool")
    return concat_branches([b1, b2], name=name)


MODULES = {"A": module_a, "B": module_b, "simple": simple_module, "down": downsample_module}

# name, module kind, channel numbers (and pool type) in the kind's argument order
LAYOUTS = {
    "imagenet": (
        ("inception3a", "A", 64, 64, 64, 64, 96, "avg", 32),
        ("inception3b", "A", 64, 64, 96, 64, 96, "avg", 64),
        ("inception3c", "B", 128, 160, 64, 96),
        ("inception4a", "A", 224, 64, 96, 96, 128, "avg", 128),
        ("inception4b", "A", 192, 96, 128, 96, 128, "avg", 128),
        ("inception4c", "A", 160, 128, 160, 128, 160, "avg", 128),
        ("inception4d", "A", 96, 128, 192, 160, 192, "avg", 128),
        ("inception4e", "B", 128, 192, 192, 256),
        ("inception5a", "A", 352, 192, 320, 160, 224, "avg", 128),
        ("inception5b", "A", 352, 192, 320, 192, 224, "max", 128),
    ),
    "cifar": (
        ("inception3a", "simple", 32, 32),
        ("inception3b", "simple", 32, 48),
        ("inception3c", "down", 80),
        ("inception4a", "simple", 112, 48),
        ("inception4b", "simple", 96, 64),
        ("inception4c", "simple", 80, 80),
        ("inception4d", "simple", 48, 96),
        ("inception4e", "down", 96),
        ("inception5a", "simple", 176, 160),
        ("inception5b", "simple", 176, 160),
    ),
}


def _stem(data, style):
    if style == "cifar":
        return conv_bn_act(data, 96, kernel=3, name="conv1")
    x = conv_bn_act(data, 64, kernel=7, stride=2, name="conv1")
    x = pool(x, 3, 2, name="pool1", ceil_mode=True)
    x = conv_bn_act(x, 64, kernel=1, name="conv2_reduce")
    x = conv_bn_act(x, 192, kernel=3, name="conv2")
    return pool(x, 3, 2, name="pool2", ceil_mode=True)


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 224, 224), dropout: float = 0.0,
               style: str | None = None) -> mx.sym.Symbol:
    """Inception-BN over Variable ``data``; see the module docstring for the layouts."""
    image_shape = as_image_shape(image_shape)  # "3,32,32" or a tuple
    if num_layers is not None:
        raise common.UserError("inception_bn has a single depth; pass num_layers=None, got %r"
                               % (num_layers,))
    dropout = check_dropout("inception_bn", dropout)
    style = infer_style(image_shape, style)
    x = _stem(mx.sym.Variable("data"), style)
    for name, kind, *numbers in LAYOUTS[style]:
        x = MODULES[kind](x, name, *numbers)
    return softmax_output(classifier(x, num_classes, dropout=dropout))
