"""Name rules between another framework's parameter names and this project's, both ways.

A rule pairs two templates, the source's and ours::

    Rename("layer{s}.{u}.conv{k+1}.weight", "stage{s}_unit{u+1}_{k:letter}_conv_weight")

A template is text with fields.  ``{u}`` is a whole number; ``{u+1}`` shows the number plus
one (``{u-2}`` minus two); ``{p:VOCAB}`` is the index into a word list of :data:`VOCABS`
(``bn_torch`` = weight, bias, running_mean, running_var; ``bn_ours`` = gamma, beta,
moving_mean, moving_var; ...), so ``bn1.{p:bn_torch}`` and ``stem_bn_{p:bn_ours}`` name the
same tensor; ``{m:word}`` is a lower-case word or number (``inception4a``'s ``4a``).  The
same field on both sides carries the same value, so one table maps names in and out.

:class:`RuleSet` applies the first rule that matches, in order (specific rules first).
:class:`BiasIntoBN` marks a source bias that has no place of its own in our graph and is
folded into the moving mean of the BatchNorm after it (exact: ``BN(conv + b)`` with mean
``m`` equals ``BN(conv)`` with mean ``m - b``).
"""
import re
from collections import namedtuple
from collections.abc import Iterable, Mapping

__all__ = ["VOCABS", "Template", "Rename", "BiasIntoBN", "RuleSet", "bn", "conv", "dense"]

VOCABS = {
    "bn_torch": ("weight", "bias", "running_mean", "running_var"),
    "bn_gluon": ("gamma", "beta", "running_mean", "running_var"),
    "bn_ours": ("gamma", "beta", "moving_mean", "moving_var"),
    "wb": ("weight", "bias"),
    "letter": ("a", "b", "c", "d"),
}
_FIELD = re.compile(r"\{(\w+)(?:([+-]\d+)|:(\w+))?\}")


class Template:
    """One side of a rule: parses names into field values and formats values into names."""

    def __init__(self, text: str):
        self.text = text
        self.fields = []     # (name, offset, vocab) in order of appearance
        pattern, last = [], 0
        for match in _FIELD.finditer(text):
            name, offset, vocab = match.group(1), int(match.group(2) or 0), match.group(3)
            if vocab not in (None, "word") and vocab not in VOCABS:
                raise ValueError("template %r: unknown vocabulary %r" % (text, vocab))
            pattern.append(re.escape(text[last:match.start()]))
            pattern.append(_field_regex(vocab))
            self.fields.append((name, offset, vocab))
            last = match.end()
        pattern.append(re.escape(text[last:]))
        self.regex = re.compile("".join(pattern) + r"\Z")

    def parse(self, name: str) -> dict | None:
        """``{field: value}`` when ``name`` fits the template, else None."""
        match = self.regex.match(name)
        if not match:
            return None
        values = {}
        for (field, offset, vocab), raw in zip(self.fields, match.groups()):
            value = _decode(raw, offset, vocab)
            if value is None or values.setdefault(field, value) != value:
                return None
        return values

    def format(self, values: Mapping[str, object]) -> str:
        """The name for ``values`` (every field of the template must be given)."""
        def one(match):
            field, offset, vocab = match.group(1), int(match.group(2) or 0), match.group(3)
            value = values[field]
            if vocab in VOCABS:
                return VOCABS[vocab][value]
            return value if vocab == "word" else str(value + offset)
        return _FIELD.sub(one, self.text)

    def __repr__(self):
        return "Template(%r)" % self.text


def _field_regex(vocab):
    if vocab in VOCABS:
        return "(%s)" % "|".join(re.escape(w) for w in VOCABS[vocab])
    return r"([0-9a-z]+)" if vocab == "word" else r"(\d+)"


def _decode(raw, offset, vocab):
    if vocab in VOCABS:
        return VOCABS[vocab].index(raw)
    if vocab == "word":
        return raw
    value = int(raw) - offset
    return value if value >= 0 else None


class Rename(namedtuple("Rename", "source ours")):
    """Source tensor ``source`` is our tensor ``ours`` (same shape and values)."""

    __slots__ = ()


class BiasIntoBN(namedtuple("BiasIntoBN", "source bn")):
    """Source conv bias ``source`` folds into our BatchNorm ``bn``'s ``moving_mean``."""

    __slots__ = ()


class _Compiled(namedtuple("_Compiled", "rule source ours")):
    __slots__ = ()


class RuleSet:
    """Ordered rules; the first whose template fits a name decides where it goes."""

    def __init__(self, rules: Iterable[tuple]):
        self.rules = [_Compiled(rule, Template(rule[0]), Template(rule[1])) for rule in rules]

    def to_ours(self, name: str) -> tuple:
        """``(rule, our name)`` for source tensor ``name``, or (None, None)."""
        for compiled in self.rules:
            values = compiled.source.parse(name)
            if values is not None:
                return compiled.rule, _bn_member(compiled, values, "moving_mean")
        return None, None

    def to_source(self, name: str) -> str | None:
        """Source name of our tensor ``name`` under a :class:`Rename`, or None."""
        for compiled in self.rules:
            if isinstance(compiled.rule, Rename):
                values = compiled.ours.parse(name)
                if values is not None:
                    return compiled.source.format(values)
        return None

    def folded_biases(self) -> list[tuple[str, str]]:
        """``(source bias name, our BatchNorm prefix)`` of every :class:`BiasIntoBN` rule."""
        return [(c.rule.source, c.rule.bn) for c in self.rules if isinstance(c.rule, BiasIntoBN)]


def _bn_member(compiled, values, member):
    if isinstance(compiled.rule, BiasIntoBN):
        return "%s_%s" % (compiled.ours.format(values), member)
    return compiled.ours.format(values)


# ----------------------------------------------------------------------------- rule helpers
def bn(source: str, ours: str, vocab: str = "bn_torch") -> list[Rename]:
    """A BatchNorm's four tensors: ``<source>.<weight|bias|running_*>`` <-> ``<ours>_<gamma|...>``."""
    return [Rename("%s.{p:%s}" % (source, vocab), "%s_{p:bn_ours}" % ours)]


def conv(source: str, ours: str, bias: bool = False) -> list[Rename]:
    """A convolution's weight (and bias): ``<source>.weight`` <-> ``<ours>_weight``."""
    if bias:
        return [Rename(source + ".{p:wb}", ours + "_{p:wb}")]
    return [Rename(source + ".weight", ours + "_weight")]


def dense(source: str, ours: str) -> list[Rename]:
    """A fully connected layer: ``<source>.weight|bias`` <-> ``<ours>_weight|bias``."""
    return [Rename(source + ".{p:wb}", ours + "_{p:wb}")]
