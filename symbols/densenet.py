"""DenseNet (Huang, Liu, van der Maaten & Weinberger 2017, "Densely connected convolutional
networks").

Each layer of a dense block sees the channel concatenation of every earlier output in the
block and adds ``growth_rate`` (k) channels: BN-ReLU-conv3x3(k), or with ``bottleneck``
(DenseNet-B) BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k).  Transitions between blocks are
BN-ReLU-conv1x1 keeping ``floor(reduction * channels)`` channels, then 2x2 average pooling;
``reduction`` < 1 is the paper's compression theta (DenseNet-C).  ``dropout`` follows every
convolution inside blocks and transitions (the paper uses 0.2 without data augmentation).
The network ends with BN-ReLU, global average pooling and the ``fc1`` classifier.

``style='cifar'`` (Sec. 3): a 3x3 stem with 16 channels (2k for DenseNet-B/BC) and three
blocks of (L-4)/3 layers each, (L-4)/6 with bottlenecks: 32 -> 16 -> 8 maps.  Paper models:
L=40 k=12 and L=100 k=12/24 (``bottleneck=False``); DenseNet-BC L=100 k=12, L=250 k=24,
L=190 k=40 (the defaults ``bottleneck=True`` give BC).
``style='imagenet'`` (Table 1): a 7x7 stride-2 stem with 2k channels and 3x3 max pooling,
then four blocks: DenseNet-121/169/201 (k=32) and -161 (k=48), all BC.

Input (N, C, H, W); output ``SoftmaxOutput`` over (N, num_classes).  Channel concatenation
bypasses oneDNN's Concat, whose backward corrupts DenseNet gradients in MXNet 1.9.1 (see
:func:`concat_features`).
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import layers

#: ImageNet depth -> (layers per dense block, growth rate), Table 1.
IMAGENET_SPECS = {
    121: ((6, 12, 24, 16), 32),
    161: ((6, 12, 36, 24), 48),
    169: ((6, 12, 32, 32), 32),
    201: ((6, 12, 48, 32), 32),
}
CIFAR_BLOCKS = 3
CIFAR_GROWTH_RATE = 12
CIFAR_PLAIN_STEM = 16  # stem channels without bottlenecks; 2k with them
DEFAULT_DEPTH = {"cifar": 100, "imagenet": 121}
BOTTLENECK_WIDTH = 4  # the 1x1 bottleneck produces 4k channels
#: Smallest input side: cifar pools twice by 2; imagenet's stem and three pools need 29.
MIN_SIDE = {"cifar": 4, "imagenet": 29}

VARIANTS = {
    "densenet": "style cifar: num_layers L with (L-4) divisible by 3, or by 6 with bottleneck "
                "(default, DenseNet-BC), e.g. 40, 100 (plain, bottleneck=False) or 100, 190, "
                "250 (BC); default L=100, growth_rate 12. style imagenet: num_layers %s "
                "(default 121), BC only. Options growth_rate, bottleneck, reduction "
                "(default 0.5 with bottleneck, else 1.0), dropout"
                % ", ".join(str(d) for d in sorted(IMAGENET_SPECS)),
}


def cifar_block_sizes(num_layers: int, bottleneck: bool) -> tuple[int, ...]:
    """Layers per dense block for a CIFAR DenseNet of depth L: (L-4)/3, halved with bottlenecks."""
    per_layer = 2 if bottleneck else 1  # convolutions per dense layer
    divisor = CIFAR_BLOCKS * per_layer
    if num_layers < 4 + divisor or (num_layers - 4) % divisor:
        examples = "40, 100" if not bottleneck else "100, 190, 250"
        hint = ("; DenseNet-%d is an ImageNet layout: pass style='imagenet' (chosen by default "
                "for inputs larger than 64 pixels)" % num_layers
                if num_layers in IMAGENET_SPECS else "")
        raise common.UserError("cifar DenseNet%s depth must be 4 + %d*n (n >= 1 layers per block), "
                               "got num_layers=%r; e.g. %s%s"
                               % ("-BC" if bottleneck else "", divisor, num_layers, examples, hint))
    return ((num_layers - 4) // divisor,) * CIFAR_BLOCKS


def dense_layer(data: mx.sym.Symbol, growth_rate: int, bottleneck: bool, dropout: float,
                name: str) -> mx.sym.Symbol:
    """One dense layer's new features: (N, C, H, W) -> (N, growth_rate, H, W)."""
    x = data
    if bottleneck:
        x = layers.bn_act_conv(x, BOTTLENECK_WIDTH * growth_rate, kernel=1,
                               name=name + "_bottleneck")
        x = _dropout(x, dropout, name + "_bottleneck")
    x = layers.bn_act_conv(x, growth_rate, kernel=3, name=name)
    return _dropout(x, dropout, name)


def dense_block(data: mx.sym.Symbol, num_layers: int, growth_rate: int, bottleneck: bool, dropout: float,
                name: str) -> mx.sym.Symbol:
    """``num_layers`` dense layers, each fed the concatenation of the block input and every
    earlier layer's features: (N, C, H, W) -> (N, C + num_layers * growth_rate, H, W).

    Concatenations go through :func:`concat_features`, not oneDNN's Concat.
    """
    features = [data]
    for i in range(1, num_layers + 1):
        layer_name = "%s_layer%d" % (name, i)
        x = features[0] if len(features) == 1 else concat_features(features, layer_name + "_input")
        features.append(dense_layer(x, growth_rate, bottleneck, dropout, layer_name))
    return concat_features(features, name + "_output")


def concat_features(features: Sequence[mx.sym.Symbol], name: str) -> mx.sym.Symbol:
    """Channel concatenation of (N, C_i, H, W) maps, done on 5-D views so that MXNet uses its
    own Concat kernel instead of oneDNN's.

    MXNet 1.9.1's oneDNN Concat backward corrupts DenseNet gradients on CPU: depending on the
    channel counts, layers before a block get zero gradients, reading them fails ("could not
    construct a sub-memory"), or the process dies of SIGFPE; the Gluon model-zoo DenseNet is
    hit too.  The 5-D detour is exact and matches the fp64 gradients.
    """
    parts = [mx.sym.expand_dims(f, axis=4, name="%s_part%d" % (name, i))
             for i, f in enumerate(features)]
    joined = mx.sym.concat(*parts, dim=1, name=name + "_5d")
    return mx.sym.reshape(joined, shape=(0, 0, 0, -1), name=name)


def transition(data: mx.sym.Symbol, num_filter: int, dropout: float, name: str) -> mx.sym.Symbol:
    """BN-ReLU-conv1x1(num_filter)-avgpool 2x2: (N, C, H, W) -> (N, num_filter, H/2, W/2)."""
    x = layers.bn_act_conv(data, num_filter, kernel=1, name=name)
    x = _dropout(x, dropout, name)
    return layers.pool(x, kernel=2, stride=2, pool_type="avg", name=name + "_pool")


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), growth_rate: int | None = None,
               bottleneck: bool = True, reduction: float | None = None, dropout: float = 0.0,
               style: str | None = None) -> mx.sym.Symbol:
    """DenseNet over ``data`` (N, C, H, W), ending in ``SoftmaxOutput`` over (N, num_classes).

    ``growth_rate`` defaults to 12 (cifar) or the Table 1 value (imagenet); ``reduction``
    to 0.5 with ``bottleneck`` (DenseNet-BC) and 1.0 without.
    """
    image_shape = layers.as_image_shape(image_shape)  # "3,32,32" or a tuple
    style = layers.infer_style(image_shape, style)
    bottleneck = bool(bottleneck)
    depth = DEFAULT_DEPTH[style] if num_layers is None else num_layers
    if style == "imagenet":
        layers.check_choice("imagenet densenet num_layers", depth, sorted(IMAGENET_SPECS))
        if not bottleneck:
            raise common.UserError("imagenet DenseNets (%s) are DenseNet-BC: leave bottleneck=True, "
                                   "or use style='cifar' for the plain form"
                                   % ", ".join(str(d) for d in sorted(IMAGENET_SPECS)))
        block_sizes, default_growth = IMAGENET_SPECS[depth]
    else:
        block_sizes, default_growth = cifar_block_sizes(depth, bottleneck), CIFAR_GROWTH_RATE
    growth_rate = default_growth if growth_rate is None else growth_rate
    if int(growth_rate) != growth_rate or growth_rate < 1:
        raise common.UserError("densenet growth_rate must be a positive integer, got %r" % (growth_rate,))
    growth_rate = int(growth_rate)
    if reduction is None:
        reduction = 0.5 if bottleneck else 1.0
    if not 0.0 < float(reduction) <= 1.0:
        raise common.UserError("densenet reduction (the fraction of channels a transition keeps) "
                               "must be in (0, 1], got %r" % (reduction,))
    if not 0.0 <= float(dropout) < 1.0:
        raise common.UserError("densenet dropout must be in [0, 1), got %r" % (dropout,))
    layers.require_min_side(image_shape, MIN_SIDE[style], "densenet (style %r)" % style)

    x = mx.sym.Variable("data")
    if style == "imagenet":
        channels = 2 * growth_rate
        x = layers.conv_bn_act(x, channels, kernel=7, stride=2, name="stem")
        x = layers.pool(x, kernel=3, stride=2, pad=1, name="stem_pool")
    else:
        channels = 2 * growth_rate if bottleneck else CIFAR_PLAIN_STEM
        x = layers.conv(x, channels, kernel=3, name="stem_conv")
    for block, size in enumerate(block_sizes, start=1):
        x = dense_block(x, size, growth_rate, bottleneck, dropout, "block%d" % block)
        channels += size * growth_rate
        if block < len(block_sizes):
            channels = int(channels * float(reduction))
            x = transition(x, channels, dropout, "transition%d" % block)
    x = layers.bn_act(x, name="final")
    logits = layers.classifier(x, num_classes)
    return layers.softmax_output(logits)


def _dropout(data, rate, name):
    return mx.sym.Dropout(data, p=float(rate), name=name + "_dropout") if rate else data
