"""VGG (Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition"), Table 1 configurations A/B/C/D/E: five stages of 3x3 convolutions (64, 128,
256, 512, 512 filters), each closed by 2x2 stride-2 max pooling.

Choosing a configuration: ``num_layers`` 11, 13, 16, 19 give A, B, D, E (VGG-16 means D, as
in torchvision and GluonCV).  ``config='C'`` gives the other 16-layer net, whose last conv in
stages 3-5 is 1x1; ``config`` also accepts 'A'..'E' directly (``num_layers`` may then be
omitted or must agree).  ``batch_norm=True`` puts BN after every convolution (torchvision's
``vgg16_bn``); the paper has none, and CIFAR models usually want it.

``style='imagenet'``: features average-pooled to 7x7 (an identity at 224x224, as in
torchvision), then FC 4096 -> 4096 (ReLU, dropout 0.5) -> classifier: 132.9M (VGG-11) to
143.7M (VGG-19) parameters at 1000 classes.  ``style='cifar'``: the 512-channel map
(1x1 at 32x32) is globally pooled into a single 512 -> num_classes classifier.

Input (N, C, H, W) with H, W >= 32; output ``SoftmaxOutput`` over (N, num_classes).  Names
follow the Caffe models: ``conv<stage>_<i>``, ``pool<stage>``, ``fc6``, ``fc7``; the classifier
is ``fc1`` as in every family.
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import layers

STAGE_FILTERS = (64, 128, 256, 512, 512)
#: Table 1: configuration -> per stage, the kernel size of each convolution.
CONFIGS = {
    "A": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "B": ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)),
    "C": ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
    "D": ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    "E": ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)),
}
#: num_layers (weight layers, counting the paper's three FC layers) -> default configuration.
DEPTH_CONFIG = {11: "A", 13: "B", 16: "D", 19: "E"}
DEFAULT_DEPTH = 16
IMAGENET_HIDDEN = (4096, 4096)
IMAGENET_POOLED_SIDE = 7
MIN_SIDE = 2 ** len(STAGE_FILTERS)  # five 2x2 poolings


def config_depth(config: str) -> int:
    """Weight layers of a configuration: its convolutions plus the paper's three FC layers."""
    return sum(len(stage) for stage in CONFIGS[config]) + 3


VARIANTS = {
    "vgg": "num_layers %s (configurations %s; default %d); config='C' for the 16-layer net "
           "with 1x1 convs; batch_norm True|False; style cifar (512 -> classes head) | "
           "imagenet (4096-4096 head, dropout default 0.5)"
           % (", ".join(str(d) for d in sorted(DEPTH_CONFIG)),
              ", ".join(DEPTH_CONFIG[d] for d in sorted(DEPTH_CONFIG)), DEFAULT_DEPTH),
}


def resolve_config(num_layers: int | None = None, config: str | None = None) -> str:
    """Configuration letter for ``num_layers`` and/or ``config``; ``ValueError`` if they clash."""
    if config is None:
        depth = DEFAULT_DEPTH if num_layers is None else num_layers
        layers.check_choice("vgg num_layers", depth, sorted(DEPTH_CONFIG))
        return DEPTH_CONFIG[depth]
    layers.check_choice("vgg config", config, sorted(CONFIGS))
    if num_layers is not None and num_layers != config_depth(config):
        depth = config_depth(config)
        raise common.UserError("vgg config %r has %d layers, not num_layers=%r; drop num_layers or "
                               "pass %d" % (config, depth, num_layers, depth))
    return config


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), config: str | None = None,
               batch_norm: bool = False, style: str | None = None,
               dropout: float | None = None) -> mx.sym.Symbol:
    """VGG over ``data`` (N, C, H, W), ending in ``SoftmaxOutput`` over (N, num_classes).

    ``dropout`` is the rate after each hidden FC layer (imagenet, default 0.5) or before the
    classifier (cifar, default 0).
    """
    image_shape = layers.as_image_shape(image_shape)  # "3,32,32" or a tuple
    config = resolve_config(num_layers, config)
    style = layers.infer_style(image_shape, style)
    if dropout is None:
        dropout = 0.5 if style == "imagenet" else 0.0
    if not 0.0 <= float(dropout) < 1.0:
        raise common.UserError("vgg dropout must be in [0, 1), got %r" % (dropout,))
    layers.require_min_side(image_shape, MIN_SIDE, "vgg")

    block = layers.conv_bn_act if batch_norm else layers.conv_act
    x = mx.sym.Variable("data")
    for stage, (num_filter, kernels) in enumerate(zip(STAGE_FILTERS, CONFIGS[config]), start=1):
        for i, kernel in enumerate(kernels, start=1):
            x = block(x, num_filter, kernel=kernel, name="conv%d_%d" % (stage, i))
        x = layers.pool(x, kernel=2, stride=2, name="pool%d" % stage)
    if style == "cifar":
        logits = layers.classifier(x, num_classes, dropout=dropout)
    else:
        x = mx.sym.contrib.AdaptiveAvgPooling2D(x, output_size=IMAGENET_POOLED_SIDE,
                                                name="pool5_resize")
        for i, num_hidden in enumerate(IMAGENET_HIDDEN, start=6):
            x = layers.fc_act(x, num_hidden, name="fc%d" % i, dropout=dropout)
        logits = layers.classifier(x, num_classes, pool=False)
    return layers.softmax_output(logits)
