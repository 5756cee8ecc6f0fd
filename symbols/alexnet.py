"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet classification with deep
convolutional neural networks"): five convolutions, three fully connected layers, ReLU,
overlapping 3x3 stride-2 max pooling and dropout in the first two FC layers.

``style='imagenet'`` is the single-tower form torchvision ships (Krizhevsky 2014, "One weird
trick": 64-192-384-256-256 filters, no LRN), 61.1M parameters at 1000 classes.  Like
torchvision it average-pools the last map to 6x6 (an identity at 224x224), so any input of
at least 63x63 works.

``style='cifar'`` keeps the five convolutions, their widths, the three pooling points and
the three FC layers, but starts with a 5x5 stride-1 convolution and pads the pools, so
32x32 maps go 32 -> 16 -> 8 -> 4; the hidden FC layers have 1024 units (7.7M parameters at
10 classes).

Input (N, C, H, W); output ``SoftmaxOutput`` over (N, num_classes).  Layer names follow the
paper's numbering: ``conv1``..``conv5``, ``pool1``/``pool2``/``pool5``, ``fc6``, ``fc7``; the
classifier is ``fc1`` as in every family.
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import layers

# Per style: the convolutions as (filters, kernel, stride, pad, max-pool after it), the
# pooling (kernel, stride, pad), the map side the features are pooled to (None: no
# resizing), the hidden FC widths and the smallest input side.
SPECS = {
    "imagenet": {
        "convs": ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
                  (256, 3, 1, 1, False), (256, 3, 1, 1, True)),
        "pool": (3, 2, 0), "pooled_side": 6, "hidden": (4096, 4096), "min_side": 63,
    },
    "cifar": {
        "convs": ((64, 5, 1, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
                  (256, 3, 1, 1, False), (256, 3, 1, 1, True)),
        "pool": (3, 2, 1), "pooled_side": None, "hidden": (1024, 1024), "min_side": 1,
    },
}
DEPTH = 8

VARIANTS = {
    "alexnet": "AlexNet, 5 conv + 3 FC (num_layers %d or None); style imagenet (torchvision's "
               "single-tower form, inputs >= 63x63) | cifar (stride-1 stem, 1024-unit FCs); "
               "dropout (default 0.5)" % DEPTH,
}


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), style: str | None = None,
               dropout: float = 0.5) -> mx.sym.Symbol:
    """AlexNet over ``data`` (N, C, H, W), ending in ``SoftmaxOutput`` over (N, num_classes).

    ``style`` is 'cifar' or 'imagenet' (default: chosen by input size); ``dropout`` is the
    rate after each hidden FC layer (0 disables it).
    """
    image_shape = layers.as_image_shape(image_shape)  # "3,32,32" or a tuple
    if num_layers is not None:
        layers.check_choice("alexnet num_layers", num_layers, (DEPTH,))
    style = layers.infer_style(image_shape, style)
    if not 0.0 <= float(dropout) < 1.0:
        raise common.UserError("alexnet dropout must be in [0, 1), got %r" % (dropout,))
    spec = SPECS[style]
    layers.require_min_side(image_shape, spec["min_side"], "alexnet (style %r)" % style)

    pool_kernel, pool_stride, pool_pad = spec["pool"]
    x = mx.sym.Variable("data")
    for i, (num_filter, kernel, stride, pad, pool_after) in enumerate(spec["convs"], start=1):
        x = layers.conv_act(x, num_filter, kernel=kernel, stride=stride, pad=pad,
                            name="conv%d" % i)
        if pool_after:
            x = layers.pool(x, kernel=pool_kernel, stride=pool_stride, pad=pool_pad,
                            name="pool%d" % i)
    if spec["pooled_side"]:
        x = mx.sym.contrib.AdaptiveAvgPooling2D(x, output_size=spec["pooled_side"],
                                                name="pool5_resize")
    for i, num_hidden in enumerate(spec["hidden"], start=6):
        x = layers.fc_act(x, num_hidden, name="fc%d" % i, dropout=dropout)
    logits = layers.classifier(x, num_classes, pool=False)
    return layers.softmax_output(logits)
