"""GoogLeNet / Inception-v1 (Szegedy et al. 2015, "Going Deeper with Convolutions",
arXiv:1409.4842): nine Inception modules (Table 1) and two auxiliary classifiers.

Two forms, chosen by ``batch_norm``:

* ``batch_norm=True`` (default): torchvision's ``googlenet``: every conv is conv -> BN -> ReLU
  without bias, no LRN, and (as in torchvision, pytorch/vision#906) the "5x5" branch uses a
  3x3 kernel.  6.6M parameters at 1000 classes.  The default because it trains from scratch
  without the paper's LRN and schedule tricks, and matches the model users compare against.
* ``batch_norm=False``: the paper / BVLC Caffe model: conv (with bias) -> ReLU, LRN after the
  first pooling and after conv2, true 5x5 branch.  7.0M parameters at 1000 classes.

``aux_heads=True`` adds the paper's two auxiliary classifiers on inception4a and inception4d
(avg pool 5x5/3 -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> FC classes), each weighted
``aux_weight`` (0.3) in the loss, as outputs 1 and 2 (``aux_inception4a_softmax``,
``aux_inception4d_softmax``; see :mod:`.deep_supervision`).  For inference take
``deep_supervision.main_output(sym)``.

Layouts (``style``, default by input side): ``'imagenet'``: the paper's stem (7x7/2 conv,
pools; 224 -> 7x7 before the classifier); ``'cifar'``: the stem is one 3x3 conv with 192
filters and no pooling, so 32x32 inputs reach inception3 at 32x32 and the classifier at 8x8
(the common CIFAR adaptation).  Input (N, C, H, W) -> ``softmax`` over ``num_classes``.
"""
import functools
from collections.abc import Callable, Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import deep_supervision
from mxcnn.symbols.layers import (
    as_image_shape,
    check_choice,
    check_dropout,
    classifier,
    concat_branches,
    conv_act,
    conv_bn_act,
    fc_act,
    infer_style,
    pool,
    softmax_output,
)

VARIANTS = {"googlenet": "GoogLeNet / Inception-v1 (22 layers; num_layers must be None or 22); "
                         "batch_norm=True torchvision form 6.6M, False Caffe form 7.0M"}
DEPTH = 22

# Table 1: name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; a 3x3/2 max pool
# comes before each stage but the first.
STAGES = (
    (("inception3a", 64, 96, 128, 16, 32, 32),
     ("inception3b", 128, 128, 192, 32, 96, 64)),
    (("inception4a", 192, 96, 208, 16, 48, 64),
     ("inception4b", 160, 112, 224, 24, 64, 64),
     ("inception4c", 128, 128, 256, 24, 64, 64),
     ("inception4d", 112, 144, 288, 32, 64, 64),
     ("inception4e", 256, 160, 320, 32, 128, 128)),
    (("inception5a", 256, 160, 320, 32, 128, 128),
     ("inception5b", 384, 192, 384, 48, 128, 128)),
)
AUX_AT = ("inception4a", "inception4d")
AUX_WEIGHT = 0.3       # Sec. 5: auxiliary losses weighted by 0.3
AUX_DROPOUT = 0.7
DROPOUT = 0.4          # Sec. 5: 40% dropout before the classifier
# LRN of the Caffe model (local_size 5, alpha 1e-4, beta 0.75)
LRN = dict(alpha=1e-4, beta=0.75, knorm=1.0, nsize=5)


# batch_norm -> the form's conv unit, kernel of the "5x5" branch, LRN in the stem
FORMS = {
    True: {"unit": conv_bn_act, "wide_kernel": 3, "lrn": False},   # torchvision
    False: {"unit": conv_act, "wide_kernel": 5, "lrn": True},      # paper / BVLC Caffe
}


def inception_module(data: mx.sym.Symbol, spec: tuple[str, int, int, int, int, int, int],
                     unit: Callable[..., mx.sym.Symbol], wide_kernel: int) -> mx.sym.Symbol:
    """Fig. 2(b): 1x1 | 1x1->3x3 | 1x1->wide | 3x3 max pool->1x1, concatenated on channels.

    (N, C, H, W) -> (N, #1x1 + #3x3 + #5x5 + pool proj, H, W), named ``<name>``."""
    name, n1, n3r, n3, n5r, n5, proj = spec
    b1 = unit(data, n1, kernel=1, name=name + "_1x1")
    b2 = unit(data, n3r, kernel=1, name=name + "_3x3_reduce")
    b2 = unit(b2, n3, kernel=3, name=name + "_3x3")
    b3 = unit(data, n5r, kernel=1, name=name + "_5x5_reduce")
    b3 = unit(b3, n5, kernel=wide_kernel, name=name + "_5x5")
    b4 = pool(data, 3, 1, 1, "max", name=name + "_pool", ceil_mode=True)
    b4 = unit(b4, proj, kernel=1, name=name + "_pool_proj")
    return concat_branches([b1, b2, b3, b4], name=name)


def aux_head(data: mx.sym.Symbol, num_classes: int, name: str, batch_norm: bool = True,
             dropout: float = AUX_DROPOUT) -> mx.sym.Symbol:
    """Sec. 5 auxiliary classifier: avg pool 5x5/3 -> 1x1 conv 128 -> FC 1024 + ReLU ->
    dropout -> FC ``num_classes``.  (N, C, 14, 14) -> logits (N, num_classes)."""
    x = pool(data, 5, 3, 0, "avg", name=name + "_pool")
    x = FORMS[batch_norm]["unit"](x, 128, kernel=1, name=name + "_proj")
    x = fc_act(x, 1024, name=name + "_fc", dropout=dropout)
    return mx.sym.FullyConnected(x, num_hidden=int(num_classes), name=name + "_fc_out")


def _stem(data, style, unit, lrn):
    if style == "cifar":
        return unit(data, 192, kernel=3, name="conv1")
    x = unit(data, 64, kernel=7, stride=2, name="conv1")
    x = pool(x, 3, 2, name="pool1", ceil_mode=True)
    if lrn:
        x = mx.sym.LRN(x, name="pool1_norm", **LRN)
    x = unit(x, 64, kernel=1, name="conv2_reduce")
    x = unit(x, 192, kernel=3, name="conv2")
    if lrn:
        x = mx.sym.LRN(x, name="conv2_norm", **LRN)
    return pool(x, 3, 2, name="pool2", ceil_mode=True)


def get_symbol(num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 224, 224), batch_norm: bool = True,
               aux_heads: bool = False, aux_weight: float = AUX_WEIGHT, dropout: float = DROPOUT,
               style: str | None = None) -> mx.sym.Symbol:
    """GoogLeNet over Variable ``data``; see the module docstring for the options."""
    image_shape = as_image_shape(image_shape)  # "3,32,32" or a tuple
    if num_layers not in (None, DEPTH):
        raise common.UserError("googlenet has %d layers; pass num_layers=None or %d, got %r"
                               % (DEPTH, DEPTH, num_layers))
    check_choice("batch_norm", batch_norm, (True, False))
    check_choice("aux_heads", aux_heads, (True, False))
    aux_weight = deep_supervision.check_weight("the auxiliary heads (aux_weight)", aux_weight)
    dropout = check_dropout("googlenet", dropout)
    style = infer_style(image_shape, style)
    form = FORMS[batch_norm]

    x = _stem(mx.sym.Variable("data"), style, form["unit"], form["lrn"])
    for index, stage in enumerate(STAGES):
        if index:
            x = pool(x, 3, 2, name="pool%d" % (index + 2), ceil_mode=True)
        for spec in stage:
            x = inception_module(x, spec, form["unit"], form["wide_kernel"])
    sym = softmax_output(classifier(x, num_classes, dropout=dropout))
    if aux_heads:
        head = functools.partial(aux_head, batch_norm=batch_norm)
        sym = deep_supervision.attach_heads(
            sym, {name + "_output": aux_weight for name in AUX_AT}, num_classes,
            head_builder=head, prefix="aux_", image_shape=image_shape)
    return sym
