"""MobileNet v1 (Howard et al. 2017, "MobileNets: efficient convolutional neural networks
for mobile vision applications") and MobileNetV2 (Sandler et al. 2018, "MobileNetV2:
inverted residuals and linear bottlenecks").

v1 (Table 1): a 3x3 stride-2 stem, then 13 depthwise-separable blocks (3x3 depthwise
conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU), global average pooling and the classifier.
``multiplier`` is the width multiplier alpha (paper: 1.0, 0.75, 0.5, 0.25; every layer gets
``int(alpha * channels)``): 4.2M, 2.6M, 1.3M, 0.5M parameters at 1000 classes.

v2 (Table 2): a 3x3 stride-2 stem, 17 inverted-residual blocks (1x1 expansion by t,
3x3 depthwise, linear 1x1 projection; identity shortcut when shape is kept), ReLU6, a
1x1 conv to 1280 channels, pooling and the classifier: 3.5M parameters at alpha 1.0.  Widths
are ``alpha * channels`` rounded to multiples of 8; the last conv is never narrowed below
1280 (Sec. 6.1).

Pooling is global, so any input size works (the paper's resolutions are 224, 192, 160, 128).
``style='cifar'`` removes the stem's stride (and for v2 also the first 24-channel stage's,
the usual CIFAR adaptation), so 32x32 inputs end on 2x2 (v1) or 4x4 (v2) maps instead of 1x1.
Input (N, C, H, W); output ``SoftmaxOutput`` over (N, num_classes).
"""
from collections.abc import Collection, Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import layers

STEM_FILTERS = 32
#: v1 depthwise-separable blocks: (pointwise filters, depthwise stride).
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
#: v2 stages of inverted residual blocks: (expansion t, filters c, repeats n, stride s).
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))
V2_LAST_FILTERS = 1280
V2_CHANNEL_DIVISOR = 8
#: Per style: the stem stride and the v2 stages whose stride becomes 1.
STYLE_SPECS = {
    "imagenet": {"stem_stride": 2, "v2_unstrided_stages": ()},
    "cifar": {"stem_stride": 1, "v2_unstrided_stages": (1,)},
}
#: Weight layers: stem + blocks + classifier (v2 also its last 1x1 conv).
DEPTHS = {
    1: 1 + 2 * len(V1_BLOCKS) + 1,
    2: 1 + sum(n * (3 if t != 1 else 2) for t, _, n, _ in V2_STAGES) + 1 + 1,
}
PAPER_MULTIPLIERS = {1: (1.0, 0.75, 0.5, 0.25), 2: (1.4, 1.0, 0.75, 0.5, 0.35)}

VARIANTS = {
    "mobilenet": "MobileNet v1 (num_layers %d or None); multiplier alpha > 0 (paper: %s); "
                 "any input size (paper: 224, 192, 160, 128); style imagenet | cifar "
                 "(stride-1 stem); dropout before the classifier (default 0)"
                 % (DEPTHS[1], ", ".join(str(a) for a in PAPER_MULTIPLIERS[1])),
    "mobilenet_v2": "MobileNetV2 (num_layers %d or None); multiplier alpha > 0 (paper: %s); "
                    "any input size; style imagenet | cifar (stride-1 stem and first "
                    "24-channel stage); dropout before the classifier (default 0)"
                    % (DEPTHS[2], ", ".join(str(a) for a in PAPER_MULTIPLIERS[2])),
}


def v1_width(channels: int, multiplier: float) -> int:
    """MobileNet v1's width rule: ``int(alpha * channels)``, at least 1."""
    return max(1, int(channels * multiplier))


def make_divisible(value: float, divisor: int = V2_CHANNEL_DIVISOR) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``), never
    going more than 10% below it: MobileNetV2's channel rounding for width multipliers."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def separable_block(data: mx.sym.Symbol, in_filter: int, num_filter: int, stride: int, name: str,
                    act_type: str | None = "relu") -> mx.sym.Symbol:
    """v1 depthwise-separable block: 3x3 depthwise conv-BN-act, 1x1 pointwise conv-BN-act.

    (N, in_filter, H, W) -> (N, num_filter, H/stride, W/stride); names ``<name>_dw_*``,
    ``<name>_pw_*``.
    """
    x = layers.conv_bn_act(data, in_filter, kernel=3, stride=stride, num_group=in_filter,
                           name=name + "_dw", act_type=act_type)
    return layers.conv_bn_act(x, num_filter, kernel=1, pad=0, name=name + "_pw",
                              act_type=act_type)


def inverted_residual(data: mx.sym.Symbol, in_filter: int, num_filter: int, stride: int, expansion: int,
                      name: str) -> mx.sym.Symbol:
    """v2 block: 1x1 expansion-BN-ReLU6 (skipped when ``expansion`` is 1), 3x3 depthwise-BN-ReLU6,
    linear 1x1 projection-BN; plus ``data`` when stride is 1 and channels are kept.

    (N, in_filter, H, W) -> (N, num_filter, H/stride, W/stride).
    """
    hidden = in_filter * expansion
    x = data
    if expansion != 1:
        x = layers.conv_bn_act(x, hidden, kernel=1, pad=0, name=name + "_expand",
                               act_type="relu6")
    x = layers.conv_bn_act(x, hidden, kernel=3, stride=stride, num_group=hidden,
                           name=name + "_dw", act_type="relu6")
    x = layers.conv_bn_act(x, num_filter, kernel=1, pad=0, name=name + "_project",
                           act_type=None)
    if stride == 1 and in_filter == num_filter:
        x = mx.sym.elemwise_add(data, x, name=name + "_add")
    return x


def v1_features(data: mx.sym.Symbol, multiplier: float, stem_stride: int) -> mx.sym.Symbol:
    """MobileNet v1 up to its last block: (N, C, H, W) -> (N, int(1024 alpha), H/s, W/s)
    with s = 16 * stem_stride."""
    in_filter = v1_width(STEM_FILTERS, multiplier)
    x = layers.conv_bn_act(data, in_filter, kernel=3, stride=stem_stride, name="stem")
    for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
        num_filter = v1_width(filters, multiplier)
        x = separable_block(x, in_filter, num_filter, stride, name="sep%d" % i)
        in_filter = num_filter
    return x


def v2_features(data: mx.sym.Symbol, multiplier: float, stem_stride: int,
                unstrided_stages: Collection[int] = ()) -> mx.sym.Symbol:
    """MobileNetV2 up to its last 1x1 conv: (N, C, H, W) -> (N, 1280 max(1, alpha), H/s, W/s)
    with s = 16 * stem_stride, halved per unstrided stage.

    ``unstrided_stages`` lists indices into ``V2_STAGES`` whose stride becomes 1.
    """
    in_filter = make_divisible(STEM_FILTERS * multiplier)
    x = layers.conv_bn_act(data, in_filter, kernel=3, stride=stem_stride, name="stem",
                           act_type="relu6")
    block = 0
    for stage, (expansion, filters, repeats, stride) in enumerate(V2_STAGES):
        stride = 1 if stage in unstrided_stages else stride
        num_filter = make_divisible(filters * multiplier)
        for i in range(repeats):
            block += 1
            x = inverted_residual(x, in_filter, num_filter, stride if i == 0 else 1, expansion,
                                  name="block%d" % block)
            in_filter = num_filter
    return layers.conv_bn_act(x, make_divisible(V2_LAST_FILTERS * max(1.0, multiplier)),
                              kernel=1, pad=0, name="last", act_type="relu6")


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), version: int = 1, multiplier: float = 1.0,
               style: str | None = None, dropout: float = 0.0) -> mx.sym.Symbol:
    """MobileNet v1 or v2 over ``data`` (N, C, H, W), ending in ``SoftmaxOutput`` over
    (N, num_classes).  ``multiplier`` is the width multiplier alpha."""
    image_shape = layers.as_image_shape(image_shape)  # "3,32,32" or a tuple
    layers.check_choice("mobilenet version", version, (1, 2))
    network = "mobilenet" if version == 1 else "mobilenet_v2"
    if num_layers is not None:
        layers.check_choice(network + " num_layers", num_layers, (DEPTHS[version],))
    multiplier = float(multiplier)
    if not multiplier > 0:
        raise common.UserError("%s multiplier (width alpha) must be positive, e.g. %s; got %r"
                               % (network, ", ".join(str(a) for a in PAPER_MULTIPLIERS[version]),
                                  multiplier))
    if not 0.0 <= float(dropout) < 1.0:
        raise common.UserError("%s dropout must be in [0, 1), got %r" % (network, dropout))
    spec = STYLE_SPECS[layers.infer_style(image_shape, style)]

    data = mx.sym.Variable("data")
    if version == 1:
        x = v1_features(data, multiplier, spec["stem_stride"])
    else:
        x = v2_features(data, multiplier, spec["stem_stride"], spec["v2_unstrided_stages"])
    logits = layers.classifier(x, num_classes, dropout=dropout)
    return layers.softmax_output(logits)
