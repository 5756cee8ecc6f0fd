"""Deep supervision: auxiliary classifier heads on intermediate feature maps.

Lee et al. 2015, "Deeply-Supervised Nets" (arXiv:1409.5185), add a companion classifier
to hidden layers; GoogLeNet (Szegedy et al. 2015) and Inception-v3 use the same idea with
their own head bodies.  :func:`attach_heads` adds such heads to ANY network symbol, at
internal outputs named as in ``sym.get_internals().list_outputs()`` (e.g.
``'stage2_unit3_output'``; :func:`attach_points` lists the candidates with their shapes).

Output convention (the trainer relies on it):

* output 0 is the main head, ``SoftmaxOutput`` named ``softmax`` (output ``softmax_output``);
* each auxiliary head ``<head>`` follows as a ``SoftmaxOutput`` named ``<head>_softmax``
  over the SAME label Variable ``softmax_label`` with ``grad_scale`` = its loss weight, so a
  ``Module`` sees the one label ``softmax_label`` and the total loss is
  ``L_main + sum(weight_i * L_i)``;
* :func:`main_output` (output 0 alone) is the inference network; :func:`prune_params`
  drops the heads' parameters from a checkpoint taken while training with heads.

    >>> sym = symbols.get_symbol("inception_bn", image_shape=(3, 32, 32))
    >>> list(attach_points(sym, (3, 32, 32), pattern="inception4?_output"))[:2]
    ['inception4a_output', 'inception4b_output']
    >>> sym = attach_heads(sym, {"inception4a_output": 0.3}, num_classes=10)
    >>> sym.list_outputs()
    ['softmax_output', 'dsn_inception4a_softmax_output']

(``symbols.get_symbol(..., deep_supervision={"inception4a_output": 0.3})`` does the same.)
"""
from __future__ import annotations

import difflib
import fnmatch
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import mxnet as mx

from mxcnn import common
from mxcnn.symbols.layers import conv, conv_bn_act, global_pool

#: Loss weight of a head given without one (GoogLeNet's 0.3).
DEFAULT_WEIGHT = 0.3
#: Hidden width of :func:`conv_head`'s 3x3 convolution.
DEFAULT_HEAD_FILTERS = 128
MAIN_HEAD = "softmax"
LABEL_NAME = "softmax_label"
_OUTPUT_SUFFIX = "_output"
# SoftmaxOutput options copied from the main head onto every auxiliary head
_SHARED_SOFTMAX_OPTIONS = ("normalization", "use_ignore", "ignore_label", "smooth_alpha",
                           "multi_output", "preserve_shape", "out_grad")

__all__ = ["attach_heads", "conv_head", "main_output", "aux_output_names", "attach_points",
           "parse_heads", "check_weight", "prune_params", "DEFAULT_WEIGHT"]


def conv_head(data: mx.sym.Symbol, num_classes: int, name: str,
              num_filter: int = DEFAULT_HEAD_FILTERS) -> mx.sym.Symbol:
    """Deeply-supervised head (Lee et al. 2015; the C1DeepSup head of semantic-segmentation
    models): conv 3x3 -> BN -> ReLU -> 1x1 conv to ``num_classes`` -> global average pool.

    ``data`` (N, C, H, W) -> logits (N, num_classes).  Parameters ``<name>_conv*``,
    ``<name>_bn*``, ``<name>_score*``.  Use ``functools.partial`` to change ``num_filter``.
    """
    x = conv_bn_act(data, num_filter, kernel=3, name=name)
    x = conv(x, num_classes, kernel=1, name=name + "_score", no_bias=False)
    x = global_pool(x, name=name + "_pool")
    return mx.sym.Flatten(x, name=name + "_flatten")


def parse_heads(heads: str | dict[str, float] | Sequence[str | tuple[str, float]] | None,
                default_weight: float = DEFAULT_WEIGHT) -> dict[str, float]:
    """Normalise a head specification to an ordered ``{internal output name: weight}``.

    Accepts a list of names, a dict name -> weight, a list of (name, weight) pairs, or a
    command-line string ``"name[:weight],name[:weight]"``.  Weights must be positive.
    """
    if heads is None:
        return OrderedDict()
    if isinstance(heads, str):
        pairs = []
        for item in (part.strip() for part in heads.split(",")):
            if not item:
                continue
            name, _, weight = item.partition(":")
            pairs.append((name.strip(), weight.strip() or default_weight))
    elif isinstance(heads, dict):
        pairs = list(heads.items())
    elif isinstance(heads, (list, tuple)):
        pairs = [item if isinstance(item, (list, tuple)) else (item, default_weight)
                 for item in heads]
    else:
        raise common.UserError("deep-supervision heads must be a list of internal output names, a "
                               "dict name -> loss weight or a 'name:weight,...' string, got %r"
                               % (heads,))
    parsed = OrderedDict()
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or not pair[0]:
            raise common.UserError("bad deep-supervision head %r: expected an internal output name "
                                   "or a (name, weight) pair" % (pair,))
        name, weight = pair
        if name in parsed:
            raise common.UserError("deep-supervision head %r is given twice" % (name,))
        parsed[name] = check_weight("deep-supervision head %r" % (name,), weight)
    return parsed


def check_weight(what: str, weight: float | str) -> float:
    """``weight`` as a positive float; ValueError naming ``what`` otherwise."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise common.UserError("loss weight of %s must be a number, got %r" % (what, weight))
    if not value > 0:
        raise common.UserError("loss weight of %s must be > 0, got %r" % (what, weight))
    return value


def _outputs(sym):
    return [sym[i] for i in range(len(sym.list_outputs()))]


def _check_main_head(sym):
    outputs = sym.list_outputs()
    if outputs[0] != MAIN_HEAD + _OUTPUT_SUFFIX:
        raise common.UserError("deep supervision needs a network whose output 0 is "
                               "SoftmaxOutput(name='softmax') (output 'softmax_output'); this symbol's "
                               "outputs are %s" % (outputs,))


def _resolve(internals_names, variables, name):
    """``name`` or ``name + '_output'`` among the internal outputs; ValueError otherwise."""
    for candidate in (name, name + _OUTPUT_SUFFIX):
        if candidate in internals_names and candidate not in variables:
            return candidate
    if name in variables:
        raise common.UserError("%r is a parameter or input, not a layer output; attach heads to a "
                               "feature map such as '<block>_output'" % (name,))
    close = difflib.get_close_matches(name, [n for n in internals_names if n not in variables],
                                      n=5, cutoff=0.6)
    raise common.UserError("the network has no internal output %r%s; list the candidates with "
                           "symbols.deep_supervision.attach_points(sym, image_shape)"
                           % (name, "; did you mean %s?" % ", ".join(close) if close else ""))


def _head_name(prefix, output_name):
    if output_name.endswith(_OUTPUT_SUFFIX):
        output_name = output_name[:-len(_OUTPUT_SUFFIX)]
    return prefix + output_name


def attach_heads(sym: mx.sym.Symbol,
                 heads: str | dict[str, float] | Sequence[str | tuple[str, float]] | None, num_classes: int,
                 head_builder: Callable[[mx.sym.Symbol, int, str], mx.sym.Symbol] = conv_head,
                 prefix: str = "dsn_", default_weight: float = DEFAULT_WEIGHT,
                 image_shape: Sequence[int] | None = None,
                 names: Sequence[str] | None = None) -> mx.sym.Symbol:
    """Add auxiliary classifier heads to ``sym`` and return the grouped training symbol.

    ``sym`` ends in ``SoftmaxOutput(name='softmax')`` (or is already a grouped symbol
    following the module convention: new heads are appended).  ``heads`` picks the
    internal outputs (see :func:`parse_heads` for the accepted forms; a name may omit its
    ``_output`` suffix).  ``head_builder(data, num_classes, name) -> logits (N, classes)``
    builds each head body (default :func:`conv_head`).  Head ``i`` is named
    ``names[i]`` if given, else ``prefix + <internal name without _output>``; its
    ``SoftmaxOutput`` is ``<head>_softmax`` with ``grad_scale`` = weight and the main head's
    label Variable and normalisation options.  With ``image_shape`` (C, H, W) each attach
    point is checked to be a 4-D feature map before anything is built.
    """
    _check_main_head(sym)
    spec = parse_heads(heads, default_weight)
    if not spec:
        return sym
    if names is not None and len(names) != len(spec):
        raise common.UserError("got %d head names for %d heads" % (len(names), len(spec)))
    internals = sym.get_internals()
    internal_names = internals.list_outputs()
    if LABEL_NAME not in internal_names:
        raise common.UserError("the main head has no label Variable %r" % LABEL_NAME)
    variables = set(sym.list_arguments()) | set(sym.list_auxiliary_states())
    resolved = [_resolve(internal_names, variables, name) for name in spec]
    if image_shape is not None:
        shapes = attach_points(sym, image_shape)
        for output_name in resolved:
            if output_name not in shapes:
                raise common.UserError("cannot attach a head to %r: it is not a 4-D feature map (N, C, "
                                       "H, W) for input %s" % (output_name, tuple(image_shape)))
    label = internals[LABEL_NAME]
    main_options = sym.attr_dict().get(MAIN_HEAD, {})
    options = {key: main_options[key] for key in _SHARED_SOFTMAX_OPTIONS if key in main_options}
    existing = set(sym.list_outputs())
    new_outputs = []
    for index, (output_name, weight) in enumerate(zip(resolved, spec.values())):
        head = names[index] if names is not None else _head_name(prefix, output_name)
        if head + "_softmax" + _OUTPUT_SUFFIX in existing:
            raise common.UserError("a head named %r already exists; pass another prefix or names"
                                   % (head,))
        existing.add(head + "_softmax" + _OUTPUT_SUFFIX)
        logits = head_builder(internals[output_name], num_classes, head)
        if image_shape is not None:
            _check_head_shape(logits, head, output_name, shapes[output_name], image_shape)
        new_outputs.append(mx.sym.SoftmaxOutput(data=logits, label=label, grad_scale=weight,
                                                name=head + "_softmax", **options))
    grouped = mx.sym.Group(_outputs(sym) + new_outputs)
    arguments = grouped.list_arguments() + grouped.list_auxiliary_states()
    clashes = sorted({name for name in arguments if arguments.count(name) > 1})
    if clashes:
        raise common.UserError("head parameters clash with existing ones (%s); pass another prefix "
                               "or names" % ", ".join(clashes[:5]))
    return grouped


def _check_head_shape(logits, head, output_name, feature_shape, image_shape):
    """ValueError if the head cannot be built on that feature map (e.g. a pooling window
    larger than the map) or does not end in (N, classes) logits."""
    try:
        _, out_shapes, _ = logits.infer_shape_partial(data=(1,) + tuple(image_shape))
    except mx.base.MXNetError as error:
        reason = str(error).strip().splitlines()[0]
        raise common.UserError("head %r cannot be built on %r of shape %s for input %s (%s); attach "
                               "it to a larger feature map or use a larger input"
                               % (head, output_name, feature_shape, tuple(image_shape), reason))
    if len(out_shapes[0]) != 2:
        raise common.UserError("head builder for %r must return (N, num_classes) logits, got shape %s"
                               % (head, out_shapes[0]))


def main_output(sym: mx.sym.Symbol) -> mx.sym.Symbol:
    """The single-head inference network: output 0 (``softmax_output``) of ``sym`` alone.

    A symbol without auxiliary heads is returned unchanged; the heads' layers are not part
    of the result (they do not feed output 0).
    """
    _check_main_head(sym)
    return sym if len(sym.list_outputs()) == 1 else sym[0]


def aux_output_names(sym: mx.sym.Symbol) -> list[str]:
    """Output names of the auxiliary heads, in order (empty for a single-head symbol)."""
    _check_main_head(sym)
    return sym.list_outputs()[1:]


def attach_points(sym: mx.sym.Symbol, image_shape: Sequence[int],
                  pattern: str | None = None) -> dict[str, tuple[int, int, int]]:
    """``{internal output name: (C, H, W)}`` of every 4-D feature map ``sym`` computes for
    input ``image_shape`` (C, H, W), in graph order; ``pattern`` (fnmatch, e.g.
    ``'*unit*_output'``) filters the names.  Any of them can take a head."""
    internals = main_output(sym).get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(data=(1,) + tuple(image_shape))
    variables = set(sym.list_arguments()) | set(sym.list_auxiliary_states())
    points = OrderedDict()
    for name, shape in zip(internals.list_outputs(), out_shapes):
        if name in variables or not shape or len(shape) != 4 or 0 in shape:
            continue
        if pattern is None or fnmatch.fnmatchcase(name, pattern):
            points[name] = tuple(shape[1:])
    return points


def prune_params(sym: mx.sym.Symbol, arg_params: Mapping[str, mx.nd.NDArray],
                 aux_params: Mapping[str, mx.nd.NDArray]
                 ) -> tuple[dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """Keep only the parameters ``sym`` uses: load a checkpoint trained with heads into
    :func:`main_output` without ``allow_extra``.  Returns ``(arg_params, aux_params)``."""
    args = set(sym.list_arguments())
    auxs = set(sym.list_auxiliary_states())
    return ({k: v for k, v in arg_params.items() if k in args},
            {k: v for k, v in aux_params.items() if k in auxs})
