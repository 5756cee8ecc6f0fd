"""ResNeXt (Xie et al. 2017, "Aggregated Residual Transformations for Deep Neural Networks")
and SE-ResNeXt (Hu et al. 2018).

Form (c) of the paper: a ResNet v1 bottleneck unit whose 3x3 convolution is grouped into
``cardinality`` groups of ``bottleneck_width`` channels each at the first stage, doubling per
stage (ResNeXt "CxWd").  Built with resnet.residual_unit / resnet.resnet, so stems, shortcuts
(``shortcut_type``, default B), SE (``se_ratio``) and naming are those of resnet.py; the
stride sits on the grouped 3x3, as in the paper and torchvision.

CIFAR layout (paper Sec. 5.3): 3x3 conv-BN-ReLU with 64 filters, 3 stages (stride 1, 2, 2)
of n units with 256, 512, 1024 output filters, depth 9n+2 (ResNeXt-29: n = 3); default
8x64d.  ImageNet layout: resnet's 7x7 stem and the bottleneck depths of
resnet.IMAGENET_UNITS (50, 101, 152, ...) with 256..2048 output filters; default 32x4d.
Shape contract: Variable ``data`` (N, C, H, W) -> ``SoftmaxOutput`` ``softmax`` (N, num_classes).
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn.symbols import layers
from mxcnn.symbols import resnet as _resnet
from mxcnn.symbols.resnet import (
    IMAGENET_FILTERS,
    IMAGENET_UNITS,
    DepthRule,
    check_common,
    check_positive_int,
    check_se_ratio,
    depth_error,
    imagenet_depths,
)

#: depth = 9n+2: three convs per unit, plus stem conv and fc1.
CIFAR_DEPTH = DepthRule(layers_per_unit=3, extra_layers=2, examples=(29,))
#: Stem and stage output filters of the CIFAR layout (paper Sec. 5.3).
CIFAR_FILTERS = (64, 256, 512, 1024)

#: Defaults by layout: (num_layers, cardinality, bottleneck_width).
DEFAULTS = {"cifar": (29, 8, 64), "imagenet": (50, 32, 4)}

VARIANTS = {
    "resnext": "ResNeXt, CIFAR layout: num_layers = %s, default ResNeXt-29 %dx%dd (16x64d also in the "
               "paper); ImageNet layout: %s, default %d %dx%dd; cardinality and bottleneck_width >= 1"
               % ((CIFAR_DEPTH,) + DEFAULTS["cifar"][1:] + (imagenet_depths(bottleneck_only=True),)
                  + DEFAULTS["imagenet"]),
}
VARIANTS["se_resnext"] = VARIANTS["resnext"].replace("ResNeXt,", "SE-ResNeXt (SE reduction 16),", 1)


def resnext(units: Sequence[int], num_stages: int, filter_list: Sequence[int], num_classes: int,
            cardinality: int, bottleneck_width: int, style: str = "cifar", shortcut_type: str = "B",
            se_ratio: int | None = None, bn_mom: float = layers.BN_MOMENTUM,
            workspace: int = layers.WORKSPACE, memonger: bool = False) -> mx.sym.Symbol:
    """Assemble a ResNeXt: resnet.resnet with grouped 3x3 convolutions.

    Stage i's bottleneck is ``cardinality * bottleneck_width * 2**i`` channels wide, split
    into ``cardinality`` groups.  Returns the ``softmax`` symbol.
    """
    inner_list = [cardinality * bottleneck_width * 2 ** i for i in range(num_stages)]
    return _resnet.resnet(units, num_stages, filter_list, num_classes, bottle_neck=True, style=style,
                          shortcut_type=shortcut_type, se_ratio=se_ratio, bn_mom=bn_mom,
                          workspace=workspace, memonger=memonger, num_group=cardinality,
                          inner_list=inner_list)


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), cardinality: int | None = None,
               bottleneck_width: int | None = None, se_ratio: int | None = None, shortcut_type: str = "B",
               style: str | None = None, bn_mom: float = layers.BN_MOMENTUM,
               workspace: int = layers.WORKSPACE, memonger: bool = False) -> mx.sym.Symbol:
    """ResNeXt (SE-ResNeXt when ``se_ratio``) for ``image_shape`` (C, H, W).

    Defaults: CIFAR ResNeXt-29 8x64d, ImageNet ResNeXt-50 32x4d; ``style`` ('cifar' |
    'imagenet') defaults to the input size.
    """
    image_shape = layers.as_image_shape(image_shape)
    style = layers.infer_style(image_shape, style)
    se_ratio = check_se_ratio(se_ratio)
    check_common(bn_mom, workspace, shortcut_type)
    network = "se_resnext" if se_ratio else "resnext"
    default_depth, default_cardinality, default_width = DEFAULTS[style]
    cardinality = check_positive_int("cardinality (number of groups, e.g. 8 or 32)",
                                     default_cardinality if cardinality is None else cardinality)
    bottleneck_width = check_positive_int(
        "bottleneck_width (channels per group in the first stage, e.g. 64 or 4)",
        default_width if bottleneck_width is None else bottleneck_width)
    depth = default_depth if num_layers is None else num_layers
    if style == "cifar":
        n = CIFAR_DEPTH.units(depth)
        if n is None:
            raise depth_error(network, num_layers, image_shape, style, CIFAR_DEPTH)
        units, filters = (n, n, n), CIFAR_FILTERS
    else:
        if depth not in IMAGENET_UNITS or not IMAGENET_UNITS[depth][1]:
            raise depth_error(network, num_layers, image_shape, style,
                              "one of " + imagenet_depths(bottleneck_only=True))
        units, filters = IMAGENET_UNITS[depth][0], IMAGENET_FILTERS[True]
    return resnext(units, len(units), filters, num_classes, cardinality, bottleneck_width,
                   style=style, shortcut_type=shortcut_type, se_ratio=se_ratio, bn_mom=bn_mom,
                   workspace=workspace, memonger=memonger)
