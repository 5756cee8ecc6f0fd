"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
Vision", arXiv:1512.00567), laid out as torchvision's ``inception_v3`` (Table 1, Figs. 5-7, 10).

Every convolution is conv -> BN -> ReLU without bias.  Stem of plain convolutions (299 ->
35x35x192), three "A" modules (Fig. 5: 5x5 and double 3x3 branches) at 35x35, grid
reduction (Fig. 10: parallel stride-2 conv and pool branches) to 17x17, four "C" modules
(Fig. 6: factorised 1x7/7x1 convolutions) at 17x17, reduction to 8x8, two "E" modules
(Fig. 7: expanded 1x3/3x1 branches), global average pool, dropout 0.5, FC.
23.8M parameters at 1000 classes without the auxiliary head (27.2M with it).

``aux_heads=True`` adds the auxiliary classifier on ``mixed6e`` (17x17x768; avg pool 5x5/3 ->
1x1 conv 128 -> 5x5 conv 768 -> FC classes, Sec. 4) as output 1 (``aux_mixed6e_softmax``),
weighted ``aux_weight`` in the loss (0.4, torchvision's reference training recipe; see
:mod:`.deep_supervision`); it needs inputs of at least 299x299.  Input (N, 3, H, W),
H, W >= 75 (299 native) -> ``softmax``.
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import deep_supervision
from mxcnn.symbols.layers import (
    as_image_shape,
    check_choice,
    check_dropout,
    classifier,
    concat_branches,
    conv_bn_act,
    pool,
    require_min_side,
    softmax_output,
)

VARIANTS = {"inception_v3": "Inception-v3 (Szegedy et al. 2016); num_layers must be None; "
                            "input >= 75x75 (299 native)"}
MIN_SIDE = 75
AUX_AT = "mixed6e"
AUX_WEIGHT = 0.4
DROPOUT = 0.5


def _unit(data, num_filter, kernel, name, stride=1, pad=None):
    return conv_bn_act(data, num_filter, kernel=kernel, stride=stride, pad=pad, name=name)


def module_a(data: mx.sym.Symbol, name: str, pool_proj: int) -> mx.sym.Symbol:
    """Fig. 5 (35x35): 1x1 64 | 1x1 48->5x5 64 | 1x1 64->3x3 96->3x3 96 | avg pool->1x1.
    (N, C, 35, 35) -> (N, 224 + pool_proj, 35, 35)."""
    b1 = _unit(data, 64, 1, name + "_1x1")
    b2 = _unit(data, 48, 1, name + "_5x5_reduce")
    b2 = _unit(b2, 64, 5, name + "_5x5")
    b3 = _unit(data, 64, 1, name + "_dbl_reduce")
    b3 = _unit(b3, 96, 3, name + "_dbl_0")
    b3 = _unit(b3, 96, 3, name + "_dbl_1")
    b4 = pool(data, 3, 1, 1, "avg", name=name + "_pool")
    b4 = _unit(b4, pool_proj, 1, name + "_pool_proj")
    return concat_branches([b1, b2, b3, b4], name=name)


def reduction_a(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Fig. 10 (35 -> 17): 3x3/2 384 | 1x1 64->3x3 96->3x3/2 96 | max pool 3x3/2."""
    b1 = _unit(data, 384, 3, name + "_3x3", stride=2, pad=0)
    b2 = _unit(data, 64, 1, name + "_dbl_reduce")
    b2 = _unit(b2, 96, 3, name + "_dbl_0")
    b2 = _unit(b2, 96, 3, name + "_dbl_1", stride=2, pad=0)
    b3 = pool(data, 3, 2, name=name + "_pool")
    return concat_branches([b1, b2, b3], name=name)


def module_c(data: mx.sym.Symbol, name: str, c7: int) -> mx.sym.Symbol:
    """Fig. 6 (17x17, n=7): 1x1 192 | 1x1 c7->1x7->7x1 192 | 1x1 c7->7x1->1x7->7x1->1x7 192 |
    avg pool->1x1 192.  (N, 768, 17, 17) -> (N, 768, 17, 17)."""
    b1 = _unit(data, 192, 1, name + "_1x1")
    b2 = _unit(data, c7, 1, name + "_7x7_reduce")
    b2 = _unit(b2, c7, (1, 7), name + "_7x7_0")
    b2 = _unit(b2, 192, (7, 1), name + "_7x7_1")
    b3 = _unit(data, c7, 1, name + "_dbl_reduce")
    for index, (num_filter, kernel) in enumerate(((c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)),
                                                  (192, (1, 7)))):
        b3 = _unit(b3, num_filter, kernel, name + "_dbl_%d" % index)
    b4 = pool(data, 3, 1, 1, "avg", name=name + "_pool")
    b4 = _unit(b4, 192, 1, name + "_pool_proj")
    return concat_branches([b1, b2, b3, b4], name=name)


def reduction_b(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """17 -> 8: 1x1 192->3x3/2 320 | 1x1 192->1x7->7x1->3x3/2 192 | max pool 3x3/2 (1280 out)."""
    b1 = _unit(data, 192, 1, name + "_3x3_reduce")
    b1 = _unit(b1, 320, 3, name + "_3x3", stride=2, pad=0)
    b2 = _unit(data, 192, 1, name + "_7x7x3_reduce")
    b2 = _unit(b2, 192, (1, 7), name + "_7x7x3_0")
    b2 = _unit(b2, 192, (7, 1), name + "_7x7x3_1")
    b2 = _unit(b2, 192, 3, name + "_7x7x3_2", stride=2, pad=0)
    b3 = pool(data, 3, 2, name=name + "_pool")
    return concat_branches([b1, b2, b3], name=name)


def module_e(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Fig. 7 (8x8): 1x1 320 | 1x1 384->(1x3 | 3x1) 384 each | 1x1 448->3x3 384->(1x3 | 3x1) |
    avg pool->1x1 192.  (N, C, 8, 8) -> (N, 2048, 8, 8)."""
    b1 = _unit(data, 320, 1, name + "_1x1")
    b2 = _unit(data, 384, 1, name + "_3x3_reduce")
    b2 = [_unit(b2, 384, (1, 3), name + "_3x3_a"), _unit(b2, 384, (3, 1), name + "_3x3_b")]
    b3 = _unit(data, 448, 1, name + "_dbl_reduce")
    b3 = _unit(b3, 384, 3, name + "_dbl_0")
    b3 = [_unit(b3, 384, (1, 3), name + "_dbl_a"), _unit(b3, 384, (3, 1), name + "_dbl_b")]
    b4 = pool(data, 3, 1, 1, "avg", name=name + "_pool")
    b4 = _unit(b4, 192, 1, name + "_pool_proj")
    return concat_branches([b1] + b2 + b3 + [b4], name=name)


# Table 1 after the stem: (name, module builder, its extra arguments)
LAYOUT = (
    ("mixed5b", module_a, (32,)),
    ("mixed5c", module_a, (64,)),
    ("mixed5d", module_a, (64,)),
    ("mixed6a", reduction_a, ()),
    ("mixed6b", module_c, (128,)),
    ("mixed6c", module_c, (160,)),
    ("mixed6d", module_c, (160,)),
    ("mixed6e", module_c, (192,)),
    ("mixed7a", reduction_b, ()),
    ("mixed7b", module_e, ()),
    ("mixed7c", module_e, ()),
)


def stem_convs(data: mx.sym.Symbol) -> mx.sym.Symbol:
    """The first three convolutions of Inception-v3/v4/ResNet-v2: 3x3/2 32, 3x3 32 (both
    unpadded), 3x3 64 (padded); (N, 3, 299, 299) -> (N, 64, 147, 147)."""
    x = _unit(data, 32, 3, "conv1a", stride=2, pad=0)
    x = _unit(x, 32, 3, "conv2a", pad=0)
    return _unit(x, 64, 3, "conv2b")


def stem(data: mx.sym.Symbol) -> mx.sym.Symbol:
    """Table 1 up to 35x35x192: :func:`stem_convs`, max pool 3x3/2, 1x1 80, 3x3 192
    (unpadded), max pool 3x3/2."""
    x = pool(stem_convs(data), 3, 2, name="pool1")
    x = _unit(x, 80, 1, "conv3b")
    x = _unit(x, 192, 3, "conv4a", pad=0)
    return pool(x, 3, 2, name="pool2")


def aux_head(data: mx.sym.Symbol, num_classes: int, name: str) -> mx.sym.Symbol:
    """Auxiliary classifier: avg pool 5x5/3 -> 1x1 conv 128 -> 5x5 conv 768 (valid) ->
    global pool -> FC.  (N, 768, 17, 17) -> logits (N, num_classes)."""
    x = pool(data, 5, 3, name=name + "_pool")
    x = _unit(x, 128, 1, name + "_proj")
    x = _unit(x, 768, 5, name + "_conv", pad=0)
    return classifier(x, num_classes, name=name + "_fc")


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 299, 299), aux_heads: bool = False,
               aux_weight: float = AUX_WEIGHT, dropout: float = DROPOUT) -> mx.sym.Symbol:
    """Inception-v3 over Variable ``data``; see the module docstring."""
    image_shape = as_image_shape(image_shape)  # "3,32,32" or a tuple
    if num_layers is not None:
        raise common.UserError("inception_v3 has a single depth; pass num_layers=None, got %r"
                               % (num_layers,))
    check_choice("aux_heads", aux_heads, (True, False))
    aux_weight = deep_supervision.check_weight("the auxiliary heads (aux_weight)", aux_weight)
    dropout = check_dropout("inception_v3", dropout)
    require_min_side(image_shape, MIN_SIDE, "inception_v3")
    x = stem(mx.sym.Variable("data"))
    for name, builder, args in LAYOUT:
        x = builder(x, name, *args)
    sym = softmax_output(classifier(x, num_classes, dropout=dropout))
    if aux_heads:
        sym = deep_supervision.attach_heads(
            sym, {AUX_AT + "_output": aux_weight}, num_classes, head_builder=aux_head,
            prefix="aux_", image_shape=image_shape)
    return sym
