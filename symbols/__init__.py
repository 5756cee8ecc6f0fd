"""Symbol generators for image-classification CNNs, behind one registry.

    >>> from mxcnn import symbols
    >>> sym = symbols.get_symbol("resnet", num_classes=10, num_layers=110)
    >>> sym.list_outputs()
    ['softmax_output']

Every network is an ``mx.sym.Symbol`` over a Variable ``data`` (N, C, H, W) ending in
``SoftmaxOutput(name='softmax')`` with label ``softmax_label``: what MXNet's ``Module``,
its examples and ``mx.model.load_checkpoint`` expect.  Each family lives in its own
module exposing ``get_symbol(num_classes, num_layers, image_shape, ...)`` and a
``VARIANTS`` dict (network name -> the depths/variants it accepts).
"""
import inspect as _inspect
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import mxnet as mx

from mxcnn import common
from mxcnn.symbols import (
    airbench,
    alexnet,
    densenet,
    googlenet,
    inception_bn,
    inception_v3,
    inception_v4,
    lenet,
    mobilenet,
    preact_resnet,
    resnet,
    resnext,
    vgg,
    wrn,
)
from mxcnn.symbols.deep_supervision import attach_heads
from mxcnn.symbols.layers import as_image_shape

# network name -> (family module, keyword arguments implied by the name).  An implied option
# may be tuned (se_resnet with se_ratio=8) but not switched off (inception_resnet_v2 with
# residual=False is inception_v4: ask for that network instead).
_NETWORKS = {
    "resnet": (resnet, {}),
    "se_resnet": (resnet, {"se_ratio": 16}),
    "preact_resnet": (preact_resnet, {}),
    "wrn": (wrn, {}),
    "resnext": (resnext, {}),
    "se_resnext": (resnext, {"se_ratio": 16}),
    "lenet": (lenet, {}),
    "alexnet": (alexnet, {}),
    "vgg": (vgg, {}),
    "googlenet": (googlenet, {}),
    "inception_bn": (inception_bn, {}),
    "inception_v3": (inception_v3, {}),
    "inception_v4": (inception_v4, {}),
    "inception_resnet_v2": (inception_v4, {"residual": True}),
    "densenet": (densenet, {}),
    "mobilenet": (mobilenet, {}),
    "mobilenet_v2": (mobilenet, {"version": 2}),
    "airbench": (airbench, {}),
}

# Implied options a caller may set to another non-zero value (e.g. the SE reduction ratio).
_TUNABLE = {"se_ratio"}

__all__ = ["get_symbol", "list_networks", "family_module", "count_params"]


def family_module(network: str) -> ModuleType:
    """The module that builds ``network``; ``ValueError`` listing the choices if unknown."""
    if network not in _NETWORKS:
        raise common.UserError("unknown network %r; choose one of: %s"
                               % (network, ", ".join(sorted(_NETWORKS))))
    return _NETWORKS[network][0]


def _plain_network(network):
    """The registered network built by the same module with none of ``network``'s implied options."""
    module = _NETWORKS[network][0]
    return next(name for name, (mod, implied) in _NETWORKS.items() if mod == module and not implied)


def list_networks() -> dict[str, str]:
    """``{network: description of its valid depths/variants}`` for every registered network."""
    return {name: family_module(name).VARIANTS[name] for name in sorted(_NETWORKS)}


def get_symbol(network: str, num_classes: int = 10, num_layers: int | None = None,
               image_shape: str | Sequence[int] = (3, 32, 32),
               deep_supervision: str | dict[str, float] | Sequence[str | tuple[str, float]] | None = None,
               **kwargs: Any) -> mx.sym.Symbol:
    """Build ``network`` as an ``mx.sym.Symbol`` ending in ``SoftmaxOutput(name='softmax')``.

    ``image_shape`` is (C, H, W) (a "3,32,32" string is accepted too); it also picks the
    CIFAR or ImageNet layout where a family has both.  Other keyword options are the
    family's own (``shortcut_type``, ``widen_factor``, ``growth_rate``, ...); an option the
    family does not take raises ``ValueError`` listing the ones it does.
    ``deep_supervision`` (internal output names, a dict name -> loss weight, or a
    ``"name:weight,..."`` string) adds auxiliary heads to any network: see
    :mod:`symbols.deep_supervision` for the grouped-output convention.
    """
    num_classes = _whole_number("num_classes", num_classes)
    if num_classes < 1:
        raise common.UserError("num_classes must be a positive integer, got %r" % (num_classes,))
    if num_layers is not None:
        num_layers = _whole_number("num_layers", num_layers)  # 20.7 is refused, not built as 20
    module = family_module(network)
    options = dict(_NETWORKS[network][1])
    accepted = [name for name, p in _inspect.signature(module.get_symbol).parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and name not in ("num_classes", "num_layers", "image_shape")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise common.UserError("%s does not take option(s) %s; its options are: %s"
                               % (network, ", ".join(unknown), ", ".join(accepted) or "none"))
    for key, implied in options.items():
        changed = key in kwargs and kwargs[key] != implied
        if changed and (key not in _TUNABLE or not kwargs[key]):
            raise common.UserError("%s implies %s=%r; for the network without it use %s"
                                   % (network, key, implied, _plain_network(network)))
    options.update(kwargs)
    image_shape = as_image_shape(image_shape)
    sym = module.get_symbol(num_classes=num_classes, num_layers=num_layers,
                            image_shape=image_shape, **options)
    if deep_supervision:
        sym = attach_heads(sym, deep_supervision, int(num_classes), image_shape=image_shape)
    return sym


def _whole_number(what, value):
    """``int(value)`` for a whole number (20, 20.0, "20"); UserError naming ``what`` otherwise."""
    try:
        number = int(value)
        whole = not isinstance(value, bool) and float(value) == number
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise common.UserError("%s must be a whole number, got %r" % (what, value))
    return number


def count_params(sym: mx.sym.Symbol, image_shape: str | Sequence[int],
                 input_names: Sequence[str] = ("data",)) -> int:
    """Learnable parameters of ``sym`` (weights, biases, BN gamma/beta; BN running statistics
    are auxiliary states and not counted), as the papers' tables count them.

    Inputs (``data`` and every ``*_label``) are excluded; shapes are inferred for one
    ``image_shape`` (C, H, W) image.
    """
    shape = (1,) + as_image_shape(image_shape)
    arg_shapes, _, _ = sym.infer_shape(**{name: shape for name in input_names})
    return sum(int(_prod(s)) for name, s in zip(sym.list_arguments(), arg_shapes)
               if name not in input_names and not name.endswith("label"))


def _prod(shape):
    out = 1
    for v in shape:
        out *= int(v)
    return out
