"""What every graph pass here guarantees: a rewritten symbol keeps the original's interface.

The training-graph passes (``fusion``, ``global_pool``, ``layout_barrier``, ``precision``)
edit the symbol's JSON and load it back.  Parameters, optimizer states and checkpoints are
keyed by name, so the result must list the same arguments, auxiliary states and outputs, in
the same order, as the symbol it replaces.
"""
import json

import mxnet as mx

__all__ = ["check_interface", "load_rewritten"]


def check_interface(original, rewritten, what):
    """Raise ``AssertionError`` (a bug of pass ``what``) unless both list the same names."""
    for listing in ("list_arguments", "list_auxiliary_states", "list_outputs"):
        if getattr(rewritten, listing)() != getattr(original, listing)():
            raise AssertionError("%s changed the symbol's interface (%s); this is a bug"
                                 % (what, listing))
    return rewritten


def load_rewritten(graph, original, what):
    """The symbol of the edited JSON dict ``graph``, checked against ``original``."""
    return check_interface(original, mx.sym.load_json(json.dumps(graph)), what)
