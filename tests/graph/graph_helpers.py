"""What the graph-pass tests share: the operators and nodes of a symbol's JSON graph."""
from mxcnn.graph.symbol_json import symbol_graph


def ops(sym):
    """The operator of every node, in graph order (``null`` for Variables)."""
    return [node["op"] for node in symbol_graph(sym)["nodes"]]


def nodes(sym, keep_amp_casts=True):
    """The JSON nodes of ``sym``, with AMP's casts unless told otherwise."""
    return symbol_graph(sym, keep_amp_casts)["nodes"]
