"""Exact rewrites of weights where a source computes the same function in another form.

Each works on numpy arrays, in float64 where it does arithmetic, and has its inverse for
export.  BatchNorm below means inference BatchNorm ``gamma * (x - mean) / sqrt(var + eps)
+ beta``; the four arrays of one are addressed through a name template with a ``{p:...}``
field (:mod:`.name_rules`), so ``features.0.{p:bn_gluon}`` names ``features.0.gamma`` ...

* :func:`fold_input_bn` -- a BatchNorm on the input image (GluonCV's CIFAR v2 and WRN nets,
  MXNet's ``bn_data``) is a per-channel affine map of the pixels: it becomes part of the
  mean/std preprocessing, which :func:`identity_bn` undoes on export.
* :func:`fold_bn_pair` -- a BatchNorm feeding only another BatchNorm (GluonCV's WRN stem) is
  merged into the second.
* :func:`adjust_eps` -- the same BatchNorm under another epsilon: ``var`` shifts by the
  difference, so ``var + eps`` (all the output depends on) is unchanged.
* :func:`option_a` -- channel orders of the option-A CIFAR ResNets, whose shortcut pads
  ``planes // 4`` zero channels on each side of the input where this project's pads at the
  end: every tensor that writes or reads the residual stream is permuted, which is exact
  (no arithmetic), and the output is the same.
"""
import numpy as np

from mxcnn import common
from mxcnn.inference.name_rules import VOCABS, Template
from mxcnn.symbols import resnet as resnet_symbols

__all__ = ["fold_input_bn", "identity_bn", "fold_bn_pair", "adjust_eps", "option_a", "TRANSFORMS"]

_MEMBERS = range(4)  # gamma, beta, moving mean, moving variance (the {p} index)


def _bn_arrays(tensors, template, pop=False):
    names = [Template(template).format({"p": p}) for p in _MEMBERS]
    missing = [n for n in names if n not in tensors]
    if missing:
        raise common.UserError("the file lacks BatchNorm tensor %s" % missing[0])
    take = tensors.pop if pop else tensors.get
    return names, [np.asarray(take(n), np.float64) for n in names]


def fold_input_bn(tensors: dict[str, np.ndarray], template: str, fixed_gamma: bool, eps: float,
                  preprocess: dict) -> dict:
    """Remove the input BatchNorm ``template`` from ``tensors``; return ``preprocess`` (mean/std
    on the 0-255 scale) with it folded in: the network then sees the same numbers."""
    _, (gamma, beta, mean, var) = _bn_arrays(tensors, template, pop=True)
    gamma = np.ones_like(mean) if fixed_gamma else gamma
    if np.any(gamma <= 0):
        raise common.UserError("the input BatchNorm %s has a gamma <= 0, which no mean/std "
                               "preprocessing expresses; this file cannot be mapped exactly"
                               % template)
    scale = np.sqrt(var + eps)
    mean0, std0 = np.asarray(preprocess["mean"], np.float64), np.asarray(preprocess["std"], np.float64)
    folded = dict(preprocess)
    folded["mean"] = [float(v) for v in mean0 + std0 * mean - beta * std0 * scale / gamma]
    folded["std"] = [float(v) for v in std0 * scale / gamma]
    return folded


def identity_bn(template: str, channels: int, eps: float) -> dict[str, np.ndarray]:
    """The four arrays of a BatchNorm that passes its input through (gamma 1, var 1 - eps)."""
    names = [Template(template).format({"p": p}) for p in _MEMBERS]
    values = [np.ones(channels), np.zeros(channels), np.zeros(channels),
              np.full(channels, 1.0 - eps)]
    return {n: v.astype(np.float32) for n, v in zip(names, values)}


def fold_bn_pair(tensors: dict[str, np.ndarray], first: str, second: str, eps: float) -> None:
    """Merge BatchNorm ``first`` into ``second`` (which alone reads its output), in place.

    The merged one keeps ``second``'s variance, has mean 0 and takes the affine part of both;
    its statistics are no longer batch statistics (re-estimate them before fine-tuning)."""
    _, (g1, b1, m1, v1) = _bn_arrays(tensors, first, pop=True)
    names, (g2, b2, m2, v2) = _bn_arrays(tensors, second)
    scale1 = g1 / np.sqrt(v1 + eps)
    shift1 = b1 - m1 * scale1
    new = (g2 * scale1, b2 + g2 * (shift1 - m2) / np.sqrt(v2 + eps), np.zeros_like(m2), v2)
    for name, value in zip(names, new):
        tensors[name] = value.astype(np.float32)


def adjust_eps(variance: np.ndarray, eps_from: float, eps_to: float) -> np.ndarray:
    """``variance`` for a BatchNorm with ``eps_to`` that computes what ``eps_from`` did."""
    if eps_from == eps_to:
        return variance
    return (np.asarray(variance, np.float64) + (eps_from - eps_to)).astype(np.float32)


# ----------------------------------------------------------------------------- option A
def _stream_orders(filters):
    """Per stage (0 = stem), ``order`` with our channel j = the source's channel order[j]."""
    orders = [np.arange(filters[0])]
    for c_in, c_out in zip(filters[:-1], filters[1:]):
        previous = orders[-1]
        if c_in == c_out:
            orders.append(previous)
            continue
        pad = c_out // 4
        if c_in + 2 * pad != c_out:
            raise common.UserError("an option-A shortcut from %d to %d channels does not pad "
                                   "planes//4 on each side" % (c_in, c_out))
        zeros = list(range(pad)) + list(range(pad + c_in, c_out))
        orders.append(np.concatenate([pad + previous, np.asarray(zeros, np.int64)]))
    return orders


def _option_a_axes(units, orders):
    """``{our tensor name prefix: (axis, order)}`` for every tensor touching the stream."""
    axes = {"stem_conv_weight": (0, orders[0]), "stem_bn": (0, orders[0]),
            "fc1_weight": (1, orders[-1])}
    for stage, count in enumerate(units, start=1):
        for unit in range(1, count + 1):
            name = "stage%d_unit%d_" % (stage, unit)
            axes[name + "a_conv_weight"] = (1, orders[stage - 1] if unit == 1 else orders[stage])
            axes[name + "b_conv_weight"] = (0, orders[stage])
            axes[name + "b_bn"] = (0, orders[stage])
    return axes


def option_a(tensors: dict[str, np.ndarray], kwargs: dict, to_ours: bool = True) -> None:
    """Reorder the channels of our-named ``tensors`` (in place) between the source's option-A
    layout and ours; ``kwargs`` are the ``get_symbol`` options (CIFAR basic ResNet)."""
    layout = resnet_symbols.cifar_unit_type(kwargs["num_layers"], False)
    if layout is None:
        raise common.UserError("option-A channel orders exist for CIFAR basic ResNets (6n+2), "
                               "not depth %r" % kwargs["num_layers"])
    units = (layout[0],) * 3
    axes = _option_a_axes(units, _stream_orders(resnet_symbols.CIFAR_FILTERS[False]))
    for name in list(tensors):
        key = name if name in axes else _bn_prefix(name)
        if key not in axes:
            continue
        axis, order = axes[key]
        index = order if to_ours else np.argsort(order)
        tensors[name] = np.take(tensors[name], index, axis=axis)


def _bn_prefix(name):
    """``stem_bn`` of ``stem_bn_moving_var`` (our BatchNorm member names), else None."""
    for member in VOCABS["bn_ours"]:
        if name.endswith("_" + member):
            return name[:-len(member) - 1]
    return None


TRANSFORMS = {"option_a": option_a}
