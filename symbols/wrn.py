"""Wide Residual Networks WRN-d-k (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

A pre-activation ResNet (preact_resnet.resnet) on CIFAR-sized inputs: bare 3x3 conv with 16
filters, 3 stages (stride 1, 2, 2) of n pre-activation basic units with 16k, 32k and 64k
filters (k = ``widen_factor``), final BN-ReLU, global average pool and ``fc1``; depth
d = 6n+4 (the count includes the 1x1 projection shortcuts, as the paper does).  ``dropout``
is applied between the two 3x3 convolutions of every unit (paper Sec. 2.4; 0.3 in its
dropout runs, 0 = none, the default).  Shortcuts are identities, or bare 1x1 projections of
the pre-activated input where the width or stride changes.

Only the CIFAR layout exists (the paper's ImageNet WRN-50-2 is a widened bottleneck ResNet);
larger inputs work with ``style='cifar'`` (the stages then run at full resolution).
Shape contract: Variable ``data`` (N, C, H, W) -> ``SoftmaxOutput`` ``softmax`` (N, num_classes).
"""
import numbers
from collections.abc import Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import layers, preact_resnet
from mxcnn.symbols.resnet import DepthRule, check_common, check_positive_int, depth_error

#: depth = 6n+4: two 3x3 convs per unit, plus stem conv, fc1 and two projection shortcuts.
CIFAR_DEPTH = DepthRule(layers_per_unit=2, extra_layers=4, examples=(10, 16, 22, 28, 40))
#: Stem filters and the per-stage base filters, multiplied by widen_factor.
STEM_FILTERS = 16
BASE_FILTERS = (16, 32, 64)

DEFAULT_DEPTH = 28
DEFAULT_WIDEN_FACTOR = 10

VARIANTS = {
    "wrn": "Wide ResNet WRN-d-k, CIFAR layout only: num_layers d = %s, default %d; widen_factor k "
           ">= 1, default %d (e.g. WRN-16-8, WRN-28-10, WRN-40-4); dropout between convs, default 0"
           % (CIFAR_DEPTH, DEFAULT_DEPTH, DEFAULT_WIDEN_FACTOR),
}


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32), widen_factor: int = DEFAULT_WIDEN_FACTOR,
               dropout: float = 0.0, style: str | None = None, bn_mom: float = layers.BN_MOMENTUM,
               workspace: int = layers.WORKSPACE, memonger: bool = False) -> mx.sym.Symbol:
    """WRN-``num_layers``-``widen_factor`` for ``image_shape`` (C, H, W), default WRN-28-10."""
    image_shape = layers.as_image_shape(image_shape)
    style = layers.infer_style(image_shape, style)
    if style != "cifar":
        raise common.UserError("wrn has only the CIFAR layout (Zagoruyko & Komodakis 2016); for a %dx%d "
                               "input pass style='cifar', or use resnet/preact_resnet for an ImageNet layout"
                               % image_shape[1:])
    check_common(bn_mom, workspace)
    widen_factor = check_positive_int("widen_factor (k in WRN-d-k)", widen_factor)
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise common.UserError("dropout must be a probability in [0, 1), e.g. 0.3, got %r" % (dropout,))
    depth = DEFAULT_DEPTH if num_layers is None else num_layers
    n = CIFAR_DEPTH.units(depth)
    if n is None:
        raise depth_error("wrn", num_layers, image_shape, style, CIFAR_DEPTH)
    filters = (STEM_FILTERS,) + tuple(f * widen_factor for f in BASE_FILTERS)
    return preact_resnet.resnet((n, n, n), 3, filters, num_classes, bottle_neck=False, style=style,
                                shortcut_type="B", dropout=float(dropout), bn_mom=bn_mom,
                                workspace=workspace, memonger=memonger)
