"""Pre-activation ResNet, "ResNet v2" (He et al. 2016b, "Identity Mappings in Deep Residual
Networks"): every unit is BN-ReLU-conv, the shortcut path stays a clean identity, and the
network ends in BN-ReLU before the global pool and ``fc1``.

The layouts and depth rules are resnet.py's (resnet.resnet_layout).  CIFAR (default for
inputs up to 64 px): bare 3x3 conv with 16 filters, then 3 stages (stride 1, 2, 2) of either
  * basic units (two 3x3 convs), 16/32/64 filters, depth 6n+2 (20, 32, 44, 56, 110), or
  * bottleneck units (1x1, 3x3, 1x1), 64/128/256 output filters, depth 9n+2 (164, 1001).
``bottleneck=None`` picks as MXNet's example/image-classification does: bottleneck for 9n+2
depths >= 164, basic for 6n+2 depths < 164; a depth that fits only one rule (29, 1001, ...)
uses that one.  Pass ``bottleneck=True``/``False`` to force a unit type.

ImageNet layout: 7x7/2 conv-BN-ReLU with 64 filters, 3x3/2 max pool, then the 4 stages of
resnet.IMAGENET_UNITS (basic for 18/34, bottleneck from 50 up; stride on the 3x3).

Projection shortcuts (``shortcut_type`` 'B', the default, or 'C') are bare 1x1 convs applied
to the unit's pre-activated input, as in the paper's code; 'A' zero-pads the raw input.
Shape contract: Variable ``data`` (N, C, H, W) -> ``SoftmaxOutput`` ``softmax`` (N, num_classes).
Wide ResNets (wrn.py) are built from this module with widened filters and dropout.
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import layers
from mxcnn.symbols.resnet import (
    CIFAR_DEPTHS,
    check_common,
    imagenet_depths,
    resnet_layout,
    stack_stages,
    stem,
    unit_in_filter,
)

#: num_layers used when none is given, by layout.
DEFAULT_DEPTH = {"cifar": 164, "imagenet": 50}

VARIANTS = {
    "preact_resnet": "PreAct ResNet (v2), CIFAR layout: num_layers = %s, default %d; "
                     "ImageNet layout: %s, default %d; shortcut_type A, B (default) or C"
                     % (CIFAR_DEPTHS, DEFAULT_DEPTH["cifar"], imagenet_depths(),
                        DEFAULT_DEPTH["imagenet"]),
}


def residual_unit(data: mx.sym.Symbol, num_filter: int, stride: int, dim_match: bool, name: str,
                  bottle_neck: bool = True, bn_mom: float = layers.BN_MOMENTUM,
                  workspace: int = layers.WORKSPACE, memonger: bool = False, in_filter: int | None = None,
                  shortcut_type: str = "B", dropout: float = 0.0) -> mx.sym.Symbol:
    """One pre-activation unit: x + F(BN-ReLU(x)).

    Basic: 3x3 (stride) -> BN-ReLU -> [dropout] -> 3x3.  Bottleneck: 1x1 (num_filter/4) ->
    BN-ReLU -> 3x3 (stride) -> BN-ReLU -> [dropout] -> 1x1 (num_filter).  ``dropout`` is the
    WRN dropout between the last two convolutions (0 = none).  ``dim_match`` means input and
    output shapes are equal; otherwise ``in_filter`` is required and the shortcut follows
    ``shortcut_type``.  Output: (N, num_filter, H/stride, W/stride).
    """
    in_filter = unit_in_filter(num_filter, stride, dim_match, in_filter, name)
    common = dict(bn_mom=bn_mom, workspace=workspace)
    act = layers.bn_act(data, name=name + "_a", bn_mom=bn_mom)
    if bottle_neck:
        inner = num_filter // 4
        x = layers.conv(act, inner, 1, 1, 0, name=name + "_a_conv", workspace=workspace)
        x = layers.bn_act_conv(x, inner, 3, stride, name=name + "_b", **common)
        last = name + "_c"
    else:
        x = layers.conv(act, num_filter, 3, stride, name=name + "_a_conv", workspace=workspace)
        last = name + "_b"
    x = layers.bn_act(x, name=last, bn_mom=bn_mom)
    if dropout:
        x = mx.sym.Dropout(x, p=float(dropout), name=last + "_dropout")
    kernel = 1 if bottle_neck else 3
    x = layers.conv(x, num_filter, kernel, 1, name=last + "_conv", workspace=workspace)
    projects = shortcut_type == "C" or (shortcut_type == "B"
                                        and (in_filter != num_filter or stride != 1))
    short = layers.shortcut(act if projects else data, in_filter, num_filter, stride, shortcut_type,
                            name=name, bn=False, **common)
    out = mx.sym.elemwise_add(x, short, name=name + "_add")
    return layers.tag_mirror_stage(out) if memonger else out


def resnet(units: Sequence[int], num_stages: int, filter_list: Sequence[int], num_classes: int,
           bottle_neck: bool, style: str = "cifar", shortcut_type: str = "B", dropout: float = 0.0,
           bn_mom: float = layers.BN_MOMENTUM, workspace: int = layers.WORKSPACE,
           memonger: bool = False) -> mx.sym.Symbol:
    """Assemble a pre-activation ResNet (or WRN) from its layout.

    ``units[i]`` units in stage i with ``filter_list[i + 1]`` output filters
    (``filter_list[0]`` is the stem); stage i > 0 starts with stride 2.  Returns the
    ``softmax`` symbol.
    """
    if len(units) != num_stages or len(filter_list) != num_stages + 1:
        raise common.UserError("need %d units and %d filters for %d stages, got %r and %r"
                               % (num_stages, num_stages + 1, num_stages, units, filter_list))
    data = mx.sym.Variable("data")
    body = stem(data, filter_list[0], style, post_activation=False, bn_mom=bn_mom,
                workspace=workspace)
    body = stack_stages(body, units, filter_list, lambda x, stage, num_filter, stride, dim_match,
                        name, in_filter: residual_unit(
                            x, num_filter, stride, dim_match, name, bottle_neck, bn_mom, workspace,
                            memonger, in_filter=in_filter, shortcut_type=shortcut_type,
                            dropout=dropout))
    body = layers.bn_act(body, name="post", bn_mom=bn_mom)
    return layers.softmax_output(layers.classifier(body, num_classes, name="fc1"))


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), bottleneck: bool | None = None,
               shortcut_type: str = "B", style: str | None = None, bn_mom: float = layers.BN_MOMENTUM,
               workspace: int = layers.WORKSPACE, memonger: bool = False) -> mx.sym.Symbol:
    """Pre-activation ResNet for ``image_shape`` (C, H, W).

    ``style`` ('cifar' | 'imagenet') defaults to the input size; ``num_layers`` defaults to
    164 (CIFAR) or 50 (ImageNet); ``bottleneck`` (CIFAR only) as in the module docstring.
    """
    image_shape = layers.as_image_shape(image_shape)
    style = layers.infer_style(image_shape, style)
    check_common(bn_mom, workspace, shortcut_type)
    units, filters, bottle_neck = resnet_layout("preact_resnet", num_layers, image_shape, style,
                                                DEFAULT_DEPTH[style], bottleneck)
    return resnet(units, len(units), filters, num_classes, bottle_neck, style=style,
                  shortcut_type=shortcut_type, bn_mom=bn_mom, workspace=workspace,
                  memonger=memonger)
