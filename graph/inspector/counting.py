"""The inspector's counting rules: MACs and other ops of one operator (stated once, used everywhere).

* **MACs** are multiply-accumulates of Convolution, Deconvolution, FullyConnected and
  (batch_)dot, for the whole batch of the given input shapes (batch 1 by default, i.e. per
  image) -- the figure papers and torchvision quote (ResNet-50 ~4.1G, VGG-16 ~15.5G).
  Biases are not counted.  Convolution: ``output elements x (C_in / groups) x kh x kw``
  (so depthwise and dilated convolutions are right); Deconvolution: ``input elements x
  (C_out / groups) x kh x kw``; FullyConnected: ``output elements x input features``.
* **Other ops** (a separate column, not in the MACs): per-element arithmetic of the rest --
  BatchNorm 2 per element (scale and shift, as at inference), activations and element-wise
  arithmetic 1 per element, Pooling one per window element per output, LRN ``nsize`` per
  element, softmax 3 per element.  Pure data movement (reshape, concat, slice, dropout at
  inference) is 0.
* **Params** are the learnable arguments (weights, biases, BN gamma/beta); BN moving
  statistics are auxiliary states, reported separately (``total_aux``).
* **Activation memory** is the bytes of each operator's outputs (float32 unless MXNet
  infers another type), with no in-place sharing: what the forward pass of training keeps.
* An operator the counter does not know is listed, counted as 0 MACs and named in one
  warning per operator type; it never stops the inspection.

Shapes are tuples of Python ints and products are exact (no int64 wrap-around).
"""
import re
from collections.abc import Iterable, Mapping, Sequence

from mxcnn.graph.symbol_json import is_true

__all__ = ["count_operator", "prod", "parse_tuple"]

#: operators that only move or select data: 0 MACs, 0 other ops
DATA_MOVEMENT = {
    "Flatten", "flatten", "Reshape", "reshape", "transpose", "Concat", "concat", "SliceChannel",
    "split", "slice", "slice_axis", "slice_like", "Crop", "Dropout", "identity", "_copy",
    "BlockGrad", "stop_gradient", "zeros_like", "ones_like", "expand_dims", "squeeze", "Cast",
    "cast", "_zeros", "_ones", "Pad", "pad", "tile", "repeat", "broadcast_to", "broadcast_like",
    "reshape_like", "SwapAxis", "swapaxes", "take", "Embedding", "UpSampling", "_contrib_BilinearResize2D",
    "shape_array", "size_array", "_full", "MakeLoss", "make_loss", "where", "_arange",
}
#: other ops per output element
PER_ELEMENT = {
    "Activation": 1, "LeakyReLU": 1, "relu": 1, "sigmoid": 1, "tanh": 1, "clip": 1,
    "hard_sigmoid": 1, "softsign": 1, "exp": 1, "log": 1, "sqrt": 1, "square": 1, "abs": 1,
    "negative": 1, "reciprocal": 1, "erf": 1,
    "elemwise_add": 1, "elemwise_sub": 1, "elemwise_mul": 1, "elemwise_div": 1,
    "_Plus": 1, "_plus": 1, "_Minus": 1, "_minus": 1, "_Mul": 1, "_mul": 1, "_Div": 1, "_div": 1,
    "_add": 1, "_sub": 1, "broadcast_add": 1, "broadcast_plus": 1, "broadcast_sub": 1,
    "broadcast_minus": 1, "broadcast_mul": 1, "broadcast_div": 1, "broadcast_maximum": 1,
    "broadcast_minimum": 1, "_maximum": 1, "_minimum": 1,
    "_plus_scalar": 1, "_minus_scalar": 1, "_rminus_scalar": 1, "_mul_scalar": 1,
    "_div_scalar": 1, "_rdiv_scalar": 1, "_power_scalar": 1, "_maximum_scalar": 1,
    "_minimum_scalar": 1,
    "BatchNorm": 2, "BatchNorm_v1": 2, "InstanceNorm": 2, "LayerNorm": 2, "GroupNorm": 2,
    "L2Normalization": 2,
    "softmax": 3, "log_softmax": 3, "SoftmaxOutput": 3, "SoftmaxActivation": 3, "Softmax": 3,
    "LinearRegressionOutput": 1, "LogisticRegressionOutput": 1,
}
#: reductions: other ops per *input* element
PER_INPUT_ELEMENT = {"sum": 1, "mean": 1, "max": 1, "min": 1, "norm": 2, "prod": 1,
                     "_contrib_AdaptiveAvgPooling2D": 1}
SUM_OPS = {"add_n", "ElementWiseSum"}  # (k - 1) adds per output element for k inputs
CONV_OPS = ("Convolution", "Convolution_v1")
DOT_OPS = ("dot", "batch_dot", "_linalg_gemm2", "linalg_gemm2")
POOL_OPS = ("Pooling", "Pooling_v1")


def prod(shape: Iterable[int] | None) -> int:
    """Elements of ``shape`` as an exact Python int (1 for a scalar's empty shape)."""
    out = 1
    for v in shape or ():
        out *= int(v)
    return out


def parse_tuple(text: str | None) -> tuple[int, ...]:
    """MXNet stores tuple attributes as strings like '(3, 3)'."""
    if text is None:
        return ()
    return tuple(int(v) for v in re.findall(r"-?\d+", str(text)))


def _weight(param_shapes, in_shapes):
    """The weight's shape: a parameter, or the operator's second input when given as data."""
    if param_shapes:
        return param_shapes[0]
    return in_shapes[1] if len(in_shapes) > 1 else ()


def _macs(op, attrs, out, in_shapes, param_shapes):
    """Multiply-accumulates of a MAC operator (``out``: output elements); None for others."""
    if op in CONV_OPS:
        return out * prod(_weight(param_shapes, in_shapes)[1:])
    if op == "Deconvolution":
        data_in = in_shapes[0] if in_shapes else ()
        return prod(data_in) * prod(_weight(param_shapes, in_shapes)[1:])
    if op == "FullyConnected":
        weight = _weight(param_shapes, in_shapes)
        return out * (weight[1] if len(weight) > 1 else 0)
    if op in DOT_OPS:
        a = in_shapes[0] if in_shapes else ()
        transpose_a = is_true(attrs.get("transpose_a", "False"))
        k = (a[-2] if transpose_a else a[-1]) if a else 0
        if op == "dot" and a and len(a) > 2:  # dot contracts the last axis of a
            k = a[0] if transpose_a else a[-1]
        return out * k
    return None


def _other_ops(op, attrs, out, in_shapes):
    """Other (non-MAC) arithmetic of one operator; None when the operator is unknown."""
    data_in = in_shapes[0] if in_shapes else ()
    if op in POOL_OPS:
        if is_true(attrs.get("global_pool", "False")):
            return out * prod(data_in[2:])
        return out * prod(parse_tuple(attrs.get("kernel")))
    if op == "LRN":
        return out * int(attrs.get("nsize", 5))
    if op in SUM_OPS:
        return out * max(0, len(in_shapes) - 1)
    if op in PER_INPUT_ELEMENT:
        return prod(data_in) * PER_INPUT_ELEMENT[op]
    if op in PER_ELEMENT:
        return out * PER_ELEMENT[op]
    if op in DATA_MOVEMENT:
        return 0
    return None


def count_operator(op: str, attrs: Mapping[str, str], out_shapes: Sequence[Sequence[int]],
                   in_shapes: Sequence[Sequence[int]],
                   param_shapes: Sequence[Sequence[int]]) -> tuple[int, int, bool]:
    """``(MACs, other ops, known)`` of one operator by the rules above.

    ``out_shapes``/``in_shapes``: its output and data-input shapes; ``param_shapes``: the
    shapes of its learnable parameters, weight first.  An unknown op gives ``(0, 0, False)``.
    """
    out = prod(out_shapes[0]) if out_shapes else 0
    macs = _macs(op, attrs, out, in_shapes, param_shapes)
    if macs is not None:
        return macs, 0, True
    ops = _other_ops(op, attrs, out, in_shapes)
    return (0, ops, True) if ops is not None else (0, 0, False)
