"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to
document recognition"), Fig. 2: C1 conv 6@5x5 -> S2 pool -> C3 conv 16@5x5 -> S4 pool ->
C5 FC 120 -> F6 FC 84 -> classifier.

Input (N, C, H, W) with any channel count, built for 28x28 (MNIST-like) and 32x32
(CIFAR-like) images.  The paper centres its 28x28 digits in a 32x32 field, so inputs
smaller than 32 pixels are zero-padded by 2 in C1; both sizes then reach C5 as 16x5x5.
Larger inputs work too (C5 sees a larger map).  Output: ``SoftmaxOutput`` over
(N, num_classes), classifier ``fc1``.

Defaults follow the paper: tanh units and average-pooling subsampling.  MXNet's own
example LeNet uses ``act_type='tanh', pool_type='max'``; ``relu``/``max`` trains fastest.
"""
from collections.abc import Sequence

import mxnet as mx

from mxcnn.symbols import layers

#: C1, C3: (filters, kernel); each is followed by a 2x2 stride-2 pooling (S2, S4).
CONV_STAGES = ((6, 5), (16, 5))
#: C5, F6: (paper name, width) of the hidden fully connected layers.
HIDDEN = (("c5", 120), ("f6", 84))
#: Inputs smaller than this side are padded in C1, as the paper pads 28 -> 32.
PAPER_SIDE = 32
C1_PAD = 2
MIN_SIDE = 12  # smallest side whose S4 output is still at least 1x1 (with the C1 padding)
DEPTH = len(CONV_STAGES) + len(HIDDEN) + 1

ACT_TYPES = ("tanh", "relu", "sigmoid")
POOL_TYPES = ("avg", "max")

VARIANTS = {
    "lenet": "LeNet-5 (num_layers %d or None) for 28x28 or 32x32 inputs with any channels; "
             "act_type %s; pool_type %s" % (DEPTH, "|".join(ACT_TYPES), "|".join(POOL_TYPES)),
}


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), act_type: str = "tanh",
               pool_type: str = "avg") -> mx.sym.Symbol:
    """LeNet-5 over ``data`` (N, C, H, W), ending in ``SoftmaxOutput`` over (N, num_classes)."""
    image_shape = layers.as_image_shape(image_shape)  # "3,32,32" or a tuple
    if num_layers is not None:
        layers.check_choice("lenet num_layers", num_layers, (DEPTH,))
    layers.check_choice("lenet act_type", act_type, ACT_TYPES)
    layers.check_choice("lenet pool_type", pool_type, POOL_TYPES)
    layers.require_min_side(image_shape, MIN_SIDE, "lenet")
    first_pad = C1_PAD if min(image_shape[1:]) < PAPER_SIDE else 0

    x = mx.sym.Variable("data")
    for i, (num_filter, kernel) in enumerate(CONV_STAGES):
        conv_name, pool_name = "c%d" % (2 * i + 1), "s%d" % (2 * i + 2)
        x = layers.conv_act(x, num_filter, kernel=kernel, pad=first_pad if i == 0 else 0,
                            name=conv_name, act_type=act_type)
        x = layers.pool(x, kernel=2, stride=2, pool_type=pool_type, name=pool_name + "_pool")
    for paper_name, num_hidden in HIDDEN:
        x = layers.fc_act(x, num_hidden, name=paper_name + "_fc", act_type=act_type)
    logits = layers.classifier(x, num_classes, pool=False)
    return layers.softmax_output(logits)
