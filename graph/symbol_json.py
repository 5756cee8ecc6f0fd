"""A symbol's JSON graph: reading it, and what every graph pass here guarantees when it
writes one back (the rewritten symbol keeps the original's interface).

The training-graph passes (``fusion``, ``global_pool``, ``layout_barrier``, ``precision``)
edit the symbol's JSON and load it back.  Parameters, optimizer states and checkpoints are
keyed by name, so the result must list the same arguments, auxiliary states and outputs, in
the same order, as the symbol it replaces.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["symbol_graph", "head_op", "is_true", "check_interface", "load_rewritten",
           "concat_detour_pieces"]


def symbol_graph(sym: mx.sym.Symbol, keep_amp_casts: bool = False) -> dict[str, Any]:
    """The symbol's JSON graph as a dict (``nodes``, ``arg_nodes``, ``heads``, ``attrs``);
    AMP's cast nodes are dropped unless ``keep_amp_casts``."""
    return json.loads(sym.tojson(remove_amp_cast=not keep_amp_casts))


def head_op(sym: mx.sym.Symbol) -> str:
    """Operator name of a single-output symbol's head node."""
    graph = symbol_graph(sym)
    return graph["nodes"][graph["heads"][0][0]]["op"]


def is_true(value: object) -> bool:
    """MXNet's boolean attributes are strings: 'True', 'true' or '1'."""
    return str(value).lower() in ("true", "1")


def check_interface(original: mx.sym.Symbol, rewritten: mx.sym.Symbol, what: str) -> mx.sym.Symbol:
    """Raise ``AssertionError`` (a bug of pass ``what``) unless both list the same names."""
    for listing in ("list_arguments", "list_auxiliary_states", "list_outputs"):
        if getattr(rewritten, listing)() != getattr(original, listing)():
            raise AssertionError("%s changed the symbol's interface (%s); this is a bug"
                                 % (what, listing))
    return rewritten


def load_rewritten(graph: dict[str, Any], original: mx.sym.Symbol, what: str) -> mx.sym.Symbol:
    """The symbol of the edited JSON dict ``graph``, checked against ``original``."""
    import mxnet as mx
    return check_interface(original, mx.sym.load_json(json.dumps(graph)), what)


def concat_detour_pieces(nodes: list[dict[str, Any]], node: dict[str, Any]) -> list[list[int]] | None:
    """The input refs of the 4-D pieces when ``node`` ends ``symbols.densenet``'s 5-D channel
    concatenation (``expand_dims(axis=4)`` pieces -> ``Concat(dim=1)`` -> Reshape to 4-D),
    else None.  ``nodes``: the graph's node list."""
    if node["op"] not in ("Reshape", "reshape") or not node["inputs"]:
        return None
    if node.get("attrs", {}).get("shape", "(0, 0, 0, -1)") != "(0, 0, 0, -1)":
        return None
    joined = nodes[node["inputs"][0][0]]
    if joined["op"] not in ("Concat", "concat") or joined.get("attrs", {}).get("dim") != "1":
        return None
    pieces = [nodes[ref[0]] for ref in joined["inputs"]]
    if not all(p["op"] == "expand_dims" and p.get("attrs", {}).get("axis") == "4" for p in pieces):
        return None
    return [list(p["inputs"][0]) for p in pieces]
