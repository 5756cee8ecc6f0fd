"""ResNet v1 (He et al. 2016, "Deep Residual Learning for Image Recognition") and SE-ResNet
(Hu et al. 2018, "Squeeze-and-Excitation Networks").

CIFAR layout (default for inputs up to 64 px): 3x3 conv-BN-ReLU with 16 filters, then 3
stages (stride 1, 2, 2) of n units, global average pool and ``fc1``.  Units are either
  * basic (two 3x3 convs), 16/32/64 filters, depth 6n+2 (paper Sec. 4.2: 20 ... 1202), or
  * bottleneck (1x1, 3x3, 1x1), 64/128/256 output filters, depth 9n+2 (ResNet-164 of
    He et al. 2016b, Table 1).
``bottleneck=None`` decides as MXNet's example/image-classification does: bottleneck for
9n+2 depths >= 164, basic for 6n+2 depths below; a depth fitting only one rule (29, 1202,
...) uses that one.  ``bottleneck=True``/``False`` forces the unit type.

ImageNet layout: 7x7/2 conv-BN-ReLU with 64 filters, 3x3/2 max pool, 4 stages of basic
(18, 34) or bottleneck (50 and deeper) units, global average pool and ``fc1`` (paper
Table 1).  No input BatchNorm (MXNet's example and GluonCV's v2 nets add one, 6 extra
parameters): normalise the data in the iterator.

Bottleneck units put the stride on the 3x3 convolution, as torchvision's resnet50 and
GluonCV's ``resnet50_v1b`` do ("ResNet v1.5"); the paper puts it on the first 1x1.  The
parameter count is the same either way and equals torchvision's (ResNet-50: 25,557,032).

Shortcuts (paper Sec. 3.3), option ``shortcut_type``: ``'A'`` zero-padded identity
(parameter-free, the paper's CIFAR choice), ``'B'`` 1x1 projection + BN only where the shape
changes (the default, as in torchvision), ``'C'`` projections on every unit.

Shape contract: Variable ``data`` (N, C, H, W) -> ``SoftmaxOutput`` ``softmax``
(N, num_classes); the classifier FC is ``fc1``.  The sibling modules ``preact_resnet``,
``wrn`` and ``resnext`` reuse the depth tables and option checks defined here.
"""
import numbers
from collections import namedtuple
from collections.abc import Callable, Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import layers


class DepthRule(namedtuple("DepthRule", "layers_per_unit extra_layers examples")):
    """CIFAR depth rule: depth = 3 * layers_per_unit * n + extra_layers for n >= 1 units per stage.

    ``examples`` are the depths the papers report; ``str(rule)`` reads "6n+2 (20, 32, ...)".
    """

    __slots__ = ()

    def units(self, depth: int | None) -> int | None:
        """Units per stage for ``depth``, or ``None`` if ``depth`` does not fit the rule."""
        if depth is None:
            return None
        n, rest = divmod(int(depth) - self.extra_layers, 3 * self.layers_per_unit)
        return n if rest == 0 and n >= 1 else None

    def __str__(self):
        return "%dn+%d (%s)" % (3 * self.layers_per_unit, self.extra_layers,
                                ", ".join(str(d) for d in self.examples))


#: CIFAR basic units: two 3x3 convolutions per unit, stem conv + fc1 (He et al. 2016, Sec. 4.2).
CIFAR_BASIC = DepthRule(layers_per_unit=2, extra_layers=2, examples=(20, 32, 44, 56, 110, 1202))
#: CIFAR bottleneck units: three convolutions per unit (He et al. 2016b: ResNet-164, -1001).
CIFAR_BOTTLENECK = DepthRule(layers_per_unit=3, extra_layers=2, examples=(164, 1001))
#: With bottleneck=None, depths from here up use bottleneck units when 9n+2 (MXNet's rule).
BOTTLENECK_FROM = 164
#: Output filters of the CIFAR stem and its 3 stages, by unit type (bottleneck?).
CIFAR_FILTERS = {False: (16, 16, 32, 64), True: (16, 64, 128, 256)}

#: ImageNet depth -> (units per stage, bottleneck) (He et al. 2016, Table 1; 200 and 269 as in
#: He et al. 2016b and MXNet's example/image-classification).
IMAGENET_UNITS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
    200: ((3, 24, 36, 3), True),
    269: ((3, 30, 48, 8), True),
}
#: Output filters of the ImageNet stem and its 4 stages, by unit type (bottleneck?).
IMAGENET_FILTERS = {False: (64, 64, 128, 256, 512), True: (64, 256, 512, 1024, 2048)}

#: num_layers used when none is given, by layout.
DEFAULT_DEPTH = {"cifar": 20, "imagenet": 50}

#: The CIFAR depth rules in words, for VARIANTS and errors (also used by preact_resnet).
CIFAR_DEPTHS = ("basic %s or bottleneck %s (bottleneck=None: bottleneck for 9n+2 >= %d)"
                % (CIFAR_BASIC, CIFAR_BOTTLENECK, BOTTLENECK_FROM))

VARIANTS = {
    "resnet": "ResNet v1, CIFAR layout: num_layers = %s, default %d; ImageNet layout: %s, "
              "default %d; shortcut_type A, B (default) or C"
              % (CIFAR_DEPTHS, DEFAULT_DEPTH["cifar"], ", ".join(str(d) for d in IMAGENET_UNITS),
                 DEFAULT_DEPTH["imagenet"]),
}
VARIANTS["se_resnet"] = VARIANTS["resnet"].replace("ResNet v1", "SE-ResNet v1 (SE reduction 16)", 1)


# ----------------------------------------------------------------------------- option checks
def check_positive_int(what: str, value: float) -> int:
    """``int(value)`` if it is a whole number >= 1, else ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) \
            or value < 1:
        raise common.UserError("%s must be a positive integer, got %r" % (what, value))
    return int(value)


def check_se_ratio(se_ratio: int | None) -> int | None:
    """``None`` (no squeeze-and-excitation) for None/0, else the reduction ratio as an int >= 1."""
    if se_ratio is None or (not isinstance(se_ratio, bool) and se_ratio == 0):
        return None
    return check_positive_int("se_ratio (squeeze-and-excitation reduction, e.g. 16; 0 or None = off)",
                              se_ratio)


def check_common(bn_mom: float, workspace: int, shortcut_type: str | None = None) -> None:
    """Validate the options every residual family shares."""
    if isinstance(bn_mom, bool) or not isinstance(bn_mom, numbers.Real) or not 0.0 <= bn_mom < 1.0:
        raise common.UserError("bn_mom must be a number in [0, 1), e.g. 0.9, got %r" % (bn_mom,))
    check_positive_int("workspace (convolution workspace in MB)", workspace)
    if shortcut_type is not None:
        layers.check_choice("shortcut_type", shortcut_type, ("A", "B", "C"))


def depth_error(network: str, num_layers: int | None, image_shape: Sequence[int], style: str,
                valid: str | DepthRule) -> common.UserError:
    """The ``ValueError`` for a depth the layout does not support, listing the valid ones."""
    return common.UserError("%s on %dx%d (%s layout) needs num_layers = %s, got %r"
                            % (network, image_shape[1], image_shape[2], style, valid, num_layers))


def imagenet_depths(bottleneck_only: bool = False) -> str:
    """Text listing the ImageNet depths of :data:`IMAGENET_UNITS`."""
    return ", ".join(str(d) for d, (_, bottleneck) in IMAGENET_UNITS.items()
                     if bottleneck or not bottleneck_only)


def cifar_unit_type(depth: int, bottleneck: bool | None = None) -> tuple[int, bool] | None:
    """``(units per stage, bottleneck)`` for a CIFAR depth, or ``None`` if it fits no rule.

    ``bottleneck=None`` applies the rule of the module docstring; True/False force a type.
    """
    basic_n, bottleneck_n = CIFAR_BASIC.units(depth), CIFAR_BOTTLENECK.units(depth)
    if bottleneck is None:
        if bottleneck_n and (depth >= BOTTLENECK_FROM or not basic_n):
            return bottleneck_n, True
        return (basic_n, False) if basic_n else None
    n = bottleneck_n if bottleneck else basic_n
    return (n, bool(bottleneck)) if n else None


def resnet_layout(network: str, num_layers: int | None, image_shape: Sequence[int], style: str,
                  default_depth: int,
                  bottleneck: bool | None = None) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """``(units, filter_list, bottle_neck)`` of a ResNet (v1 or v2) of ``num_layers``.

    CIFAR: :func:`cifar_unit_type` and :data:`CIFAR_FILTERS`; ImageNet:
    :data:`IMAGENET_UNITS` and :data:`IMAGENET_FILTERS` (``bottleneck`` must stay None
    there).  ``num_layers=None`` takes ``default_depth``.  ``ValueError`` lists the choices.
    """
    layers.check_choice("bottleneck", bottleneck, (None, True, False))
    depth = default_depth if num_layers is None else num_layers
    if style == "cifar":
        layout = cifar_unit_type(depth, bottleneck)
        if layout is None:
            valid = {None: CIFAR_DEPTHS, False: "%s with bottleneck=False" % (CIFAR_BASIC,),
                     True: "%s with bottleneck=True" % (CIFAR_BOTTLENECK,)}[bottleneck]
            raise depth_error(network, num_layers, image_shape, style, valid)
        n, bottle_neck = layout
        return (n, n, n), CIFAR_FILTERS[bottle_neck], bottle_neck
    if bottleneck is not None:
        raise common.UserError("%s: bottleneck applies to the CIFAR layout only; on ImageNet the depth "
                               "decides (18, 34 basic; 50 and up bottleneck): leave it None" % network)
    if depth not in IMAGENET_UNITS:
        raise depth_error(network, num_layers, image_shape, style, "one of " + imagenet_depths())
    units, bottle_neck = IMAGENET_UNITS[depth]
    return units, IMAGENET_FILTERS[bottle_neck], bottle_neck


def stem(data: mx.sym.Symbol, num_filter: int, style: str, name: str = "stem", post_activation: bool = True,
         bn_mom: float = layers.BN_MOMENTUM, workspace: int = layers.WORKSPACE) -> mx.sym.Symbol:
    """The ResNet stem: CIFAR 3x3/1 conv; ImageNet 7x7/2 conv then 3x3/2 max pool.

    The convolution is followed by BN-ReLU in the ImageNet layout and, if
    ``post_activation``, in the CIFAR layout too (pre-activation nets start with a bare
    conv).  Output: (N, num_filter, H, W) for CIFAR, (N, num_filter, H/4, W/4) for ImageNet.
    """
    if style == "cifar":
        if post_activation:
            return layers.conv_bn_act(data, num_filter, 3, 1, name=name, bn_mom=bn_mom,
                                      workspace=workspace)
        return layers.conv(data, num_filter, 3, 1, name=name + "_conv", workspace=workspace)
    x = layers.conv_bn_act(data, num_filter, 7, 2, 3, name=name, bn_mom=bn_mom, workspace=workspace)
    return mx.sym.Pooling(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max",
                          name=name + "_pool")


# ----------------------------------------------------------------------------- the network
def residual_unit(data: mx.sym.Symbol, num_filter: int, stride: int, dim_match: bool, name: str,
                  bottle_neck: bool = True, bn_mom: float = layers.BN_MOMENTUM,
                  workspace: int = layers.WORKSPACE, memonger: bool = False, in_filter: int | None = None,
                  shortcut_type: str = "B", se_ratio: int | None = None, num_group: int = 1,
                  inner_filter: int | None = None) -> mx.sym.Symbol:
    """One post-activation residual unit: relu(F(x) + shortcut(x)).

    Basic: 3x3 (stride) -> 3x3.  Bottleneck: 1x1 -> 3x3 (stride, ``num_group`` groups) -> 1x1,
    inner width ``inner_filter`` (default ``num_filter // 4``; ResNeXt passes its own).
    Each conv is followed by BN (ReLU except the last); SE (``se_ratio``) scales F(x).
    ``dim_match`` means input and output shapes are equal; otherwise ``in_filter`` (the
    input channels) is required and the shortcut follows ``shortcut_type``.
    Output: (N, num_filter, H/stride, W/stride), tagged for mirroring if ``memonger``.
    """
    in_filter = unit_in_filter(num_filter, stride, dim_match, in_filter, name)
    common = dict(bn_mom=bn_mom, workspace=workspace)
    if bottle_neck:
        inner = int(inner_filter) if inner_filter else num_filter // 4
        x = layers.conv_bn_act(data, inner, 1, 1, 0, name=name + "_a", **common)
        x = layers.conv_bn_act(x, inner, 3, stride, name=name + "_b", num_group=num_group, **common)
        x = layers.conv_bn_act(x, num_filter, 1, 1, 0, name=name + "_c", act_type=None, **common)
    else:
        x = layers.conv_bn_act(data, num_filter, 3, stride, name=name + "_a", **common)
        x = layers.conv_bn_act(x, num_filter, 3, 1, name=name + "_b", act_type=None, **common)
    if se_ratio:
        x = layers.squeeze_excitation(x, num_filter, se_ratio, name=name)
    short = layers.shortcut(data, in_filter, num_filter, stride, shortcut_type, name=name, bn=True,
                            **common)
    out = mx.sym.Activation(mx.sym.elemwise_add(x, short, name=name + "_add"), act_type="relu",
                            name=name + "_relu")
    return layers.tag_mirror_stage(out) if memonger else out


def unit_in_filter(num_filter: int, stride: int, dim_match: bool, in_filter: int | None, name: str) -> int:
    """The input channels of a residual unit: ``num_filter`` when ``dim_match`` (stride 1
    required), else the given ``in_filter``; ``ValueError`` naming the unit otherwise."""
    if dim_match:
        if stride != 1:
            raise common.UserError("%s: dim_match=True needs stride 1, got %r" % (name, stride))
        return num_filter
    if in_filter is None:
        raise common.UserError("%s: in_filter (input channels) is required when dim_match=False" % name)
    return in_filter


def stack_stages(body: mx.sym.Symbol, units: Sequence[int], filter_list: Sequence[int],
                 add_unit: Callable[[mx.sym.Symbol, int, int, int, bool, str, int], mx.sym.Symbol]
                 ) -> mx.sym.Symbol:
    """Stack ``units[i]`` residual units of ``filter_list[i + 1]`` filters for each stage i.

    The first unit of every stage but the first has stride 2.  ``add_unit(x, stage,
    num_filter, stride, dim_match, name, in_filter)`` builds one unit named
    ``stage<i+1>_unit<j+1>``; ``filter_list[0]`` is the stem's width.
    """
    in_filter = filter_list[0]
    for i, count in enumerate(units):
        out_filter = filter_list[i + 1]
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            body = add_unit(body, i, out_filter, stride, in_filter == out_filter and stride == 1,
                            "stage%d_unit%d" % (i + 1, j + 1), in_filter)
            in_filter = out_filter
    return body


def resnet(units: Sequence[int], num_stages: int, filter_list: Sequence[int], num_classes: int,
           bottle_neck: bool, style: str = "cifar", shortcut_type: str = "B", se_ratio: int | None = None,
           bn_mom: float = layers.BN_MOMENTUM, workspace: int = layers.WORKSPACE, memonger: bool = False,
           num_group: int = 1, inner_list: Sequence[int] | None = None) -> mx.sym.Symbol:
    """Assemble a ResNet v1 / ResNeXt from its layout.

    ``units[i]`` units in stage i with ``filter_list[i + 1]`` output filters
    (``filter_list[0]`` is the stem); stage i > 0 starts with stride 2.  ``inner_list[i]``
    overrides the bottleneck width of stage i (ResNeXt).  Returns the ``softmax`` symbol.
    """
    if len(units) != num_stages or len(filter_list) != num_stages + 1:
        raise common.UserError("need %d units and %d filters for %d stages, got %r and %r"
                               % (num_stages, num_stages + 1, num_stages, units, filter_list))
    data = mx.sym.Variable("data")
    body = stem(data, filter_list[0], style, bn_mom=bn_mom, workspace=workspace)
    body = stack_stages(body, units, filter_list, lambda x, stage, num_filter, stride, dim_match,
                        name, in_filter: residual_unit(
                            x, num_filter, stride, dim_match, name, bottle_neck, bn_mom, workspace,
                            memonger, in_filter=in_filter, shortcut_type=shortcut_type,
                            se_ratio=se_ratio, num_group=num_group,
                            inner_filter=inner_list[stage] if inner_list else None))
    return layers.softmax_output(layers.classifier(body, num_classes, name="fc1"))


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), bottleneck: bool | None = None,
               shortcut_type: str = "B", se_ratio: int | None = None, style: str | None = None,
               bn_mom: float = layers.BN_MOMENTUM, workspace: int = layers.WORKSPACE,
               memonger: bool = False) -> mx.sym.Symbol:
    """ResNet v1 (SE-ResNet when ``se_ratio``) for ``image_shape`` (C, H, W).

    ``style`` ('cifar' | 'imagenet') defaults to the input size (layers.infer_style);
    ``num_layers`` defaults to 20 (CIFAR) or 50 (ImageNet); ``bottleneck`` (CIFAR only) as
    in the module docstring.  ``memonger`` tags every unit's output as a mirror stage
    (metadata only).
    """
    image_shape = layers.as_image_shape(image_shape)
    style = layers.infer_style(image_shape, style)
    se_ratio = check_se_ratio(se_ratio)
    check_common(bn_mom, workspace, shortcut_type)
    network = "se_resnet" if se_ratio else "resnet"
    units, filters, bottle_neck = resnet_layout(network, num_layers, image_shape, style,
                                                DEFAULT_DEPTH[style], bottleneck)
    return resnet(units, len(units), filters, num_classes, bottle_neck, style=style,
                  shortcut_type=shortcut_type, se_ratio=se_ratio, bn_mom=bn_mom,
                  workspace=workspace, memonger=memonger)
