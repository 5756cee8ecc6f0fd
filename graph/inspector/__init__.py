"""Inspect any MXNet symbol: per-layer shapes, parameters, MACs and activation memory.

What netscope, its "CNN Analyzer" fork, torchinfo and Netron show, for MXNet::

    >>> from mxcnn.graph.inspector import summarize
    >>> s = summarize(sym, data=(1, 3, 32, 32))
    >>> s.total_macs, s.total_params
    >>> print(s.render(group_by="stage"))

``python -m mxcnn.graph.inspector NAME|prefix-symbol.json`` (``mxcnn-inspect`` when installed).

* :mod:`.counting` -- the counting rules (MACs, other ops, params, activation memory);
* :mod:`.summary` -- :class:`LayerRow`, :class:`Summary` and its text table;
* :mod:`.analysis` -- :func:`summarize` (MXNet shape inference) and :func:`load_symbol`;
* :mod:`.layout` -- the folded netscope-style graph and its layered layout;
* :mod:`.render` -- DOT/SVG/PDF through Graphviz and the offline HTML page (``assets/``);
* :mod:`.cli` -- the command line.
"""
from mxcnn.graph.inspector.analysis import load_symbol, summarize
from mxcnn.graph.inspector.cli import main
from mxcnn.graph.inspector.layout import fold_graph, layout_graph
from mxcnn.graph.inspector.render import to_dot, write_graphviz, write_html
from mxcnn.graph.inspector.summary import InspectError, LayerRow, Summary

__all__ = ["InspectError", "LayerRow", "Summary", "summarize", "load_symbol", "fold_graph",
           "layout_graph", "to_dot", "write_html", "write_graphviz", "main"]
