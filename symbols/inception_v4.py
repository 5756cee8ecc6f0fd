"""Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2017,
"Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
arXiv:1602.07261).  Every convolution is conv -> BN -> ReLU without bias; input 299x299
(at least 75x75), dropout 0.2 (keep 0.8) before the FC; ``softmax`` over ``num_classes``.

* ``residual=False``, Inception-v4 (Figs. 3-9): stem to 35x35x384, 4 Inception-A,
  Reduction-A (k, l, m, n = 192, 224, 256, 384), 7 Inception-B, Reduction-B,
  3 Inception-C, global average pool.  42.7M parameters at 1000 classes.
* ``residual=True`` (network ``inception_resnet_v2``): laid out as the released TF-slim model
  (and timm), whose stem after the shared first convolutions is Inception-v3's plus a
  35x35 mixed module (320 channels) -- the paper's Fig. 3 stem and its 1154/2146 channel
  counts do not add up.  10 Inception-ResNet-A (block35), Reduction-A (256, 256, 384, 384),
  20 Inception-ResNet-B (block17), Reduction-B, 10 Inception-ResNet-C (block8, the last
  without ReLU), 1x1 conv to 1536.  Each residual block adds ``scale`` x (1x1 linear conv
  with bias of its concatenated branches) to its input (Sec. 3.3, Fig. 20: scaling by
  0.1-0.3 stabilises training); defaults 0.17 / 0.10 / 0.20 as released, ``residual_scale``
  sets all three.  55.8M parameters at 1000 classes.

Module/block ``<name>`` (``inception_a1``, ``block17_20``, ...) outputs ``<name>_output``.
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols.layers import (
    as_image_shape,
    check_choice,
    check_dropout,
    classifier,
    concat_branches,
    conv,
    conv_bn_act,
    pool,
    require_min_side,
    softmax_output,
)

from .inception_v3 import MIN_SIDE, stem_convs

VARIANTS = {
    "inception_v4": "Inception-v4 (Szegedy et al. 2017); num_layers must be None; "
                    "input >= 75x75 (299 native)",
    "inception_resnet_v2": "Inception-ResNet-v2 (Szegedy et al. 2017); num_layers must be None; "
                           "input >= 75x75 (299 native); residual_scale 0.1-0.3",
}
DROPOUT = 0.2
RESIDUAL_SCALES = {"block35": 0.17, "block17": 0.10, "block8": 0.20}


def _unit(data, num_filter, kernel, name, stride=1, pad=None):
    """conv -> BN -> ReLU; stride-2 convolutions are unpadded ('VALID') as in the paper."""
    if pad is None and stride != 1:
        pad = 0
    return conv_bn_act(data, num_filter, kernel=kernel, stride=stride, pad=pad, name=name)


def _avg_pool(data, name):
    # TF 'SAME' average pooling: the padding is not counted
    return pool(data, 3, 1, 1, "avg", name=name, count_include_pad=False)


def _max_pool(data, name):
    return pool(data, 3, 2, 0, "max", name=name)


# ---------------------------------------------------------------- Inception-v4 (Figs. 3-9)

def v4_stem(data: mx.sym.Symbol) -> mx.sym.Symbol:
    """Fig. 3: (N, 3, 299, 299) -> (N, 384, 35, 35)."""
    x = stem_convs(data)
    x = concat_branches([_max_pool(x, "mixed3a_pool"), _unit(x, 96, 3, "mixed3a_3x3", stride=2)],
                        name="mixed3a")
    b1 = _unit(x, 64, 1, "mixed4a_3x3_reduce")
    b1 = _unit(b1, 96, 3, "mixed4a_3x3", pad=0)
    b2 = _unit(x, 64, 1, "mixed4a_7x7_reduce")
    b2 = _unit(b2, 64, (1, 7), "mixed4a_7x7_0")
    b2 = _unit(b2, 64, (7, 1), "mixed4a_7x7_1")
    b2 = _unit(b2, 96, 3, "mixed4a_7x7_3x3", pad=0)
    x = concat_branches([b1, b2], name="mixed4a")
    b1 = _unit(x, 192, 3, "mixed5a_3x3", stride=2)
    return concat_branches([b1, _max_pool(x, "mixed5a_pool")], name="mixed5a")


def inception_a(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Fig. 4 (35x35): 1x1 96 | 1x1 64->3x3 96 | 1x1 64->3x3 96->3x3 96 | avg pool->1x1 96."""
    b1 = _unit(data, 96, 1, name + "_1x1")
    b2 = _unit(data, 64, 1, name + "_3x3_reduce")
    b2 = _unit(b2, 96, 3, name + "_3x3")
    b3 = _unit(data, 64, 1, name + "_dbl_reduce")
    b3 = _unit(b3, 96, 3, name + "_dbl_0")
    b3 = _unit(b3, 96, 3, name + "_dbl_1")
    b4 = _unit(_avg_pool(data, name + "_pool"), 96, 1, name + "_pool_proj")
    return concat_branches([b1, b2, b3, b4], name=name)


def reduction_a(data: mx.sym.Symbol, name: str, k: int, l: int, m: int, n: int) -> mx.sym.Symbol:
    """Fig. 7 (35 -> 17): 3x3/2 n | 1x1 k->3x3 l->3x3/2 m | max pool 3x3/2 (Table 1 gives
    k, l, m, n per network)."""
    b1 = _unit(data, n, 3, name + "_3x3", stride=2)
    b2 = _unit(data, k, 1, name + "_dbl_reduce")
    b2 = _unit(b2, l, 3, name + "_dbl_0")
    b2 = _unit(b2, m, 3, name + "_dbl_1", stride=2)
    return concat_branches([b1, b2, _max_pool(data, name + "_pool")], name=name)


def inception_b(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Fig. 5 (17x17): 1x1 384 | 1x1 192->1x7 224->7x1 256 |
    1x1 192->7x1 192->1x7 224->7x1 224->1x7 256 | avg pool->1x1 128 (1024 out)."""
    b1 = _unit(data, 384, 1, name + "_1x1")
    b2 = _unit(data, 192, 1, name + "_7x7_reduce")
    b2 = _unit(b2, 224, (1, 7), name + "_7x7_0")
    b2 = _unit(b2, 256, (7, 1), name + "_7x7_1")
    b3 = _unit(data, 192, 1, name + "_dbl_reduce")
    for index, (num_filter, kernel) in enumerate(((192, (7, 1)), (224, (1, 7)), (224, (7, 1)),
                                                  (256, (1, 7)))):
        b3 = _unit(b3, num_filter, kernel, name + "_dbl_%d" % index)
    b4 = _unit(_avg_pool(data, name + "_pool"), 128, 1, name + "_pool_proj")
    return concat_branches([b1, b2, b3, b4], name=name)


def reduction_b(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Fig. 8 (17 -> 8): 1x1 192->3x3/2 192 | 1x1 256->1x7 256->7x1 320->3x3/2 320 |
    max pool 3x3/2 (1536 out)."""
    b1 = _unit(data, 192, 1, name + "_3x3_reduce")
    b1 = _unit(b1, 192, 3, name + "_3x3", stride=2)
    b2 = _unit(data, 256, 1, name + "_7x7_reduce")
    b2 = _unit(b2, 256, (1, 7), name + "_7x7_0")
    b2 = _unit(b2, 320, (7, 1), name + "_7x7_1")
    b2 = _unit(b2, 320, 3, name + "_7x7_3x3", stride=2)
    return concat_branches([b1, b2, _max_pool(data, name + "_pool")], name=name)


def inception_c(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Fig. 6 (8x8): 1x1 256 | 1x1 384->(1x3 | 3x1) 256 | 1x1 384->3x1 448->1x3 512->
    (1x3 | 3x1) 256 | avg pool->1x1 256 (1536 out)."""
    b1 = _unit(data, 256, 1, name + "_1x1")
    b2 = _unit(data, 384, 1, name + "_3x3_reduce")
    b2 = [_unit(b2, 256, (1, 3), name + "_3x3_a"), _unit(b2, 256, (3, 1), name + "_3x3_b")]
    b3 = _unit(data, 384, 1, name + "_dbl_reduce")
    b3 = _unit(b3, 448, (3, 1), name + "_dbl_0")
    b3 = _unit(b3, 512, (1, 3), name + "_dbl_1")
    b3 = [_unit(b3, 256, (1, 3), name + "_dbl_a"), _unit(b3, 256, (3, 1), name + "_dbl_b")]
    b4 = _unit(_avg_pool(data, name + "_pool"), 256, 1, name + "_pool_proj")
    return concat_branches([b1] + b2 + b3 + [b4], name=name)


# ------------------------------------------------------- Inception-ResNet-v2 (TF-slim layout)

def irv2_stem(data: mx.sym.Symbol) -> mx.sym.Symbol:
    """(N, 3, 299, 299) -> (N, 320, 35, 35): Inception-v3's stem then mixed5b."""
    x = _max_pool(stem_convs(data), "pool1")
    x = _unit(x, 80, 1, "conv3b")
    x = _unit(x, 192, 3, "conv4a", pad=0)
    x = _max_pool(x, "pool2")
    b1 = _unit(x, 96, 1, "mixed5b_1x1")
    b2 = _unit(x, 48, 1, "mixed5b_5x5_reduce")
    b2 = _unit(b2, 64, 5, "mixed5b_5x5")
    b3 = _unit(x, 64, 1, "mixed5b_dbl_reduce")
    b3 = _unit(b3, 96, 3, "mixed5b_dbl_0")
    b3 = _unit(b3, 96, 3, "mixed5b_dbl_1")
    b4 = _unit(_avg_pool(x, "mixed5b_pool"), 64, 1, "mixed5b_pool_proj")
    return concat_branches([b1, b2, b3, b4], name="mixed5b")


def _residual(data, branches, channels, scale, name, relu):
    """input + scale * conv1x1(concat(branches)) [-> ReLU], output named ``name``."""
    mixed = concat_branches(branches, name=name + "_mixed")
    up = conv(mixed, channels, kernel=1, name=name + "_up", no_bias=False)
    if not relu:
        return mx.sym.elemwise_add(data, up * scale, name=name)
    total = mx.sym.elemwise_add(data, up * scale, name=name + "_add")
    return mx.sym.Activation(total, act_type="relu", name=name)


def block35(data: mx.sym.Symbol, name: str, scale: float, relu: bool = True) -> mx.sym.Symbol:
    """Fig. 16 (35x35x320): 1x1 32 | 1x1 32->3x3 32 | 1x1 32->3x3 48->3x3 64."""
    b1 = _unit(data, 32, 1, name + "_1x1")
    b2 = _unit(data, 32, 1, name + "_3x3_reduce")
    b2 = _unit(b2, 32, 3, name + "_3x3")
    b3 = _unit(data, 32, 1, name + "_dbl_reduce")
    b3 = _unit(b3, 48, 3, name + "_dbl_0")
    b3 = _unit(b3, 64, 3, name + "_dbl_1")
    return _residual(data, [b1, b2, b3], 320, scale, name, relu)


def block17(data: mx.sym.Symbol, name: str, scale: float, relu: bool = True) -> mx.sym.Symbol:
    """Fig. 17 (17x17x1088): 1x1 192 | 1x1 128->1x7 160->7x1 192."""
    b1 = _unit(data, 192, 1, name + "_1x1")
    b2 = _unit(data, 128, 1, name + "_7x7_reduce")
    b2 = _unit(b2, 160, (1, 7), name + "_7x7_0")
    b2 = _unit(b2, 192, (7, 1), name + "_7x7_1")
    return _residual(data, [b1, b2], 1088, scale, name, relu)


def block8(data: mx.sym.Symbol, name: str, scale: float, relu: bool = True) -> mx.sym.Symbol:
    """Fig. 19 (8x8x2080): 1x1 192 | 1x1 192->1x3 224->3x1 256."""
    b1 = _unit(data, 192, 1, name + "_1x1")
    b2 = _unit(data, 192, 1, name + "_3x3_reduce")
    b2 = _unit(b2, 224, (1, 3), name + "_3x3_0")
    b2 = _unit(b2, 256, (3, 1), name + "_3x3_1")
    return _residual(data, [b1, b2], 2080, scale, name, relu)


def reduction_b_residual(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Fig. 18 as released (17 -> 8): 1x1 256->3x3/2 384 | 1x1 256->3x3/2 288 |
    1x1 256->3x3 288->3x3/2 320 | max pool 3x3/2 (2080 out)."""
    b1 = _unit(data, 256, 1, name + "_a_reduce")
    b1 = _unit(b1, 384, 3, name + "_a", stride=2)
    b2 = _unit(data, 256, 1, name + "_b_reduce")
    b2 = _unit(b2, 288, 3, name + "_b", stride=2)
    b3 = _unit(data, 256, 1, name + "_c_reduce")
    b3 = _unit(b3, 288, 3, name + "_c_0")
    b3 = _unit(b3, 320, 3, name + "_c_1", stride=2)
    return concat_branches([b1, b2, b3, _max_pool(data, name + "_pool")], name=name)


# (stem, body); body rows: (name, repeats, builder, extra arguments).  Repeated modules are
# named <name><i> (v4) or <name>_<i> (residual blocks, which also take a scale).
LAYOUTS = {
    False: (v4_stem, (
        ("inception_a", 4, inception_a, ()),
        ("reduction_a", 1, reduction_a, (192, 224, 256, 384)),
        ("inception_b", 7, inception_b, ()),
        ("reduction_b", 1, reduction_b, ()),
        ("inception_c", 3, inception_c, ()),
    )),
    True: (irv2_stem, (
        ("block35", 10, block35, None),
        ("mixed6a", 1, reduction_a, (256, 256, 384, 384)),
        ("block17", 20, block17, None),
        ("mixed7a", 1, reduction_b_residual, ()),
        ("block8", 10, block8, None),
    )),
}


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 299, 299), residual: bool = False,
               residual_scale: float | None = None, dropout: float = DROPOUT) -> mx.sym.Symbol:
    """Inception-v4 (``residual=False``) or Inception-ResNet-v2 over Variable ``data``."""
    image_shape = as_image_shape(image_shape)  # "3,32,32" or a tuple
    network = "inception_resnet_v2" if residual else "inception_v4"
    check_choice("residual", residual, (True, False))
    if num_layers is not None:
        raise common.UserError("%s has a single depth; pass num_layers=None, got %r"
                               % (network, num_layers))
    if residual_scale is not None:
        if not residual:
            raise common.UserError("residual_scale applies to inception_resnet_v2 only")
        if not 0 < float(residual_scale) <= 1:
            raise common.UserError("residual_scale must be in (0, 1] (the paper uses 0.1-0.3), got %r"
                                   % (residual_scale,))
    dropout = check_dropout(network, dropout)
    require_min_side(image_shape, MIN_SIDE, network)

    stem, body = LAYOUTS[residual]
    x = stem(mx.sym.Variable("data"))
    for name, repeats, builder, args in body:
        if args is not None:  # an Inception module or a reduction
            for index in range(repeats):
                x = builder(x, "%s%d" % (name, index + 1) if repeats > 1 else name, *args)
            continue
        scale = RESIDUAL_SCALES[name] if residual_scale is None else float(residual_scale)
        for index in range(repeats):
            last = name == "block8" and index == repeats - 1
            # the released model ends with an unscaled block8 without ReLU
            x = builder(x, "%s_%d" % (name, index + 1), 1.0 if last else scale, relu=not last)
    if residual:
        x = _unit(x, 1536, 1, "conv7b")
    return softmax_output(classifier(x, num_classes, dropout=dropout))
