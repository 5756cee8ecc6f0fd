"""What an inspection returns: one :class:`LayerRow` per operator, their :class:`Summary` and its text table.

Also the stage/unit grouping of layer names and the number formats every view shares.
Pure Python over the figures :mod:`.analysis` counted (no MXNet here).
"""
import collections
import os
import re
from collections.abc import Sequence
from typing import Any

from mxcnn import common

__all__ = ["InspectError", "LayerRow", "Summary", "COLUMNS", "SORT_KEYS", "GROUP_BY",
           "shape_text", "human_count", "human_bytes", "assign_groups", "group_names"]


class InspectError(common.UserError):
    """A symbol, shape or option the inspector cannot use; the message says how to fix it."""


class LayerRow:
    """One operator of the symbol with its counted figures (all ints, shapes are tuples)."""

    __slots__ = ("index", "name", "op", "attrs", "inputs", "output_shapes", "params",
                 "param_shapes", "aux", "macs", "ops", "activation_bytes", "stage", "unit",
                 "counted")

    def __init__(self, **fields):
        for key in self.__slots__:
            setattr(self, key, fields.get(key))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_shapes[0] if self.output_shapes else ()

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__slots__}

    def __repr__(self):
        return "LayerRow(%s %s %s params=%d macs=%d)" % (self.name, self.op, self.output_shape,
                                                         self.params, self.macs)


#: text-table columns: (key for --sort-by, header, LayerRow attribute)
COLUMNS = (("name", "Layer", "name"), ("op", "Operator", "op"),
           ("shape", "Output shape", "output_shape"), ("params", "Params", "params"),
           ("macs", "MACs", "macs"), ("ops", "Other ops", "ops"),
           ("memory", "Act. memory", "activation_bytes"))
SORT_KEYS = tuple(c[0] for c in COLUMNS)
_NUMERIC_KEYS = ("params", "macs", "ops", "memory")
GROUP_BY = ("none", "stage", "unit")


def _merge(index, key, rows):
    """One aggregate row standing for ``rows`` (a stage or a unit)."""
    return LayerRow(
        index=index, name=key, op="%d layer%s" % (len(rows), "" if len(rows) == 1 else "s"),
        attrs={}, inputs=[], output_shapes=[rows[-1].output_shape],
        params=sum(r.params for r in rows), param_shapes={}, aux=sum(r.aux for r in rows),
        macs=sum(r.macs for r in rows), ops=sum(r.ops for r in rows),
        activation_bytes=sum(r.activation_bytes for r in rows), stage=rows[0].stage,
        unit=rows[0].unit, counted=all(r.counted for r in rows))


class Summary:
    """Per-operator rows of a symbol plus totals; ``render()`` gives the text table.

    ``rows`` hold operators only (inputs and parameters are folded into their consumers);
    ``inputs`` maps each data input to its shape; ``edges`` lists (producer row or input
    name, output index, consumer row index) for graph drawing.
    """

    def __init__(self, rows, inputs, edges, heads, warnings_, name=None):
        self.rows = rows
        self.inputs = inputs
        self.edges = edges
        self.heads = heads
        self.warnings = warnings_
        self.name = name or "symbol"

    total_params = property(lambda self: sum(r.params for r in self.rows))
    total_aux = property(lambda self: sum(r.aux for r in self.rows))
    total_macs = property(lambda self: sum(r.macs for r in self.rows))
    total_ops = property(lambda self: sum(r.ops for r in self.rows))
    total_activation_bytes = property(lambda self: sum(r.activation_bytes for r in self.rows))

    @property
    def batch_size(self) -> int:
        first = next(iter(self.inputs.values()), ())
        return first[0] if first else 1

    def grouped(self, group_by: str = "stage") -> list[LayerRow]:
        """Rows merged per stage (or stage/unit): one aggregate ``LayerRow`` per group."""
        if group_by not in GROUP_BY:
            raise InspectError("group_by must be one of %s, got %r" % (", ".join(GROUP_BY), group_by))
        if group_by == "none":
            return list(self.rows)
        groups = collections.OrderedDict()
        for row in self.rows:
            key = row.stage if group_by == "stage" else (
                row.stage if row.unit == row.stage else row.stage + "/" + row.unit)
            groups.setdefault(key, []).append(row)
        return [_merge(index, key, rows) for index, (key, rows) in enumerate(groups.items())]

    def _sorted(self, rows, sort_by):
        if sort_by is None:
            return rows
        if sort_by not in SORT_KEYS:
            raise InspectError("sort_by must be one of %s, got %r" % (", ".join(SORT_KEYS), sort_by))
        attr = dict((c[0], c[2]) for c in COLUMNS)[sort_by]
        if sort_by in _NUMERIC_KEYS:
            return sorted(rows, key=lambda r: getattr(r, attr), reverse=True)
        return sorted(rows, key=lambda r: str(getattr(r, attr)))

    def render(self, group_by: str = "none", sort_by: str | None = None, max_name: int = 48) -> str:
        """The text table (torchinfo-like) with totals; ``sort_by`` is one of ``SORT_KEYS``."""
        rows = self._sorted(self.grouped(group_by), sort_by)
        table = [[h for _, h, _ in COLUMNS]]
        for r in rows:
            name = r.name if len(r.name) <= max_name else r.name[:max_name - 1] + "~"
            table.append([name, r.op + ("" if r.counted else " (?)"), shape_text(r.output_shape),
                          "{:,}".format(r.params), "{:,}".format(r.macs), "{:,}".format(r.ops),
                          human_bytes(r.activation_bytes)])
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        right = {3, 4, 5, 6}

        def fmt(line):
            return "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        rule = "-" * len(fmt(table[0]))
        out = [rule, fmt(table[0]), rule] + [fmt(line) for line in table[1:]] + [rule]
        return "\n".join(out + self._footer() + [rule])

    def _footer(self):
        """The totals under the table, one line each."""
        inputs = ", ".join("%s=%s" % (k, shape_text(v)) for k, v in self.inputs.items())
        lines = [
            "Input: %s" % inputs,
            "Layers: %d operators" % len(self.rows),
            "Params: {:,} learnable ({}), {:,} auxiliary (BN statistics)".format(
                self.total_params, human_count(self.total_params), self.total_aux),
            "MACs: {:,} ({}) conv/deconv/FC/dot for batch {}".format(
                self.total_macs, human_count(self.total_macs), self.batch_size),
            "Other ops: {:,} ({}) BN/activation/pooling/element-wise".format(
                self.total_ops, human_count(self.total_ops)),
            "Activation memory: %s (forward outputs, float32, no sharing)"
            % human_bytes(self.total_activation_bytes),
            "Parameter memory: %s" % human_bytes(4 * (self.total_params + self.total_aux)),
        ]
        uncounted = sorted({r.op for r in self.rows if not r.counted})
        if uncounted:
            lines.append("Not counted (0 MACs, marked (?)): %s" % ", ".join(uncounted))
        return lines

    def __str__(self):
        return self.render()

    def to_json_dict(self) -> dict[str, Any]:
        """Plain-JSON form (rows, inputs, totals) for tools and the HTML page."""
        return {
            "name": self.name,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "totals": {"params": self.total_params, "aux": self.total_aux, "macs": self.total_macs,
                       "ops": self.total_ops, "activation_bytes": self.total_activation_bytes},
            "rows": [{"name": r.name, "op": r.op, "output_shapes": [list(s) for s in r.output_shapes],
                      "params": r.params, "aux": r.aux, "macs": r.macs, "ops": r.ops,
                      "activation_bytes": r.activation_bytes, "stage": r.stage, "unit": r.unit,
                      "counted": r.counted, "attrs": r.attrs,
                      "param_shapes": {k: list(v) for k, v in r.param_shapes.items()}}
                     for r in self.rows],
        }


def shape_text(shape: Sequence[int] | None) -> str:
    """``(1, 16, 32, 32)`` -> ``'1x16x32x32'``; ``'-'`` for no shape."""
    return "x".join(str(v) for v in shape) if shape else "-"


def human_count(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return "%.2f%s" % (value / scale, unit)
    return str(value)


def human_bytes(value: float) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if value >= scale:
            return "%.2f %s" % (value / scale, unit)
    return "%d B" % value


# --------------------------------------------------------------------------------------------
# stage / unit grouping of layer names
# --------------------------------------------------------------------------------------------

_STAGE_RE = re.compile(r"(?:stage|layers?|dense_?block|transition|trans|group)_?\d+[a-z]?")
_UNIT_RE = re.compile(r"(?:unit|block|bottleneck|blk|module)_?\d+[a-z]?")


def group_names(name: str) -> tuple[str, str]:
    """(stage, unit) from a layer name, e.g. 'stage2_unit3_conv1' -> ('stage2', 'unit3')."""
    match = _STAGE_RE.search(name)
    stage = match.group(0) if match else re.split(r"[_.]", name, maxsplit=1)[0] or name
    rest = name[match.end():] if match else name[len(stage):]
    unit = _UNIT_RE.search(rest)
    return stage, (unit.group(0) if unit else stage)


def assign_groups(rows: Sequence[LayerRow]) -> None:
    """Stage/unit of each row; layers outside any stage become 'stem' (before) or 'head' (after).

    A prefix shared by every name (Gluon's 'resnetv10_') is ignored; unstaged layers between
    two stages (a DenseNet transition) join the stage before them.  Names without any stage
    pattern (VGG's conv1_1, Inception's in3a_...) group by their first name token.
    """
    if not rows:
        return
    prefix = os.path.commonprefix([r.name for r in rows])
    prefix = prefix[:prefix.rfind("_") + 1] if len(rows) > 1 else ""
    staged = [bool(_STAGE_RE.search(r.name[len(prefix):])) for r in rows]
    first = staged.index(True) if any(staged) else None
    last = len(staged) - 1 - staged[::-1].index(True) if any(staged) else None
    previous = None
    for i, row in enumerate(rows):
        stage, unit = group_names(row.name[len(prefix):])
        if first is not None and not staged[i]:
            if i < first or i > last:
                stage = unit = "stem" if i < first else "head"
            else:  # e.g. a DenseNet transition: part of the stage it closes
                stage = previous
        row.stage, row.unit = stage, unit
        previous = stage
