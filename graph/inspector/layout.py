"""The netscope-style graph of a :class:`Summary`: folded nodes (:func:`fold_graph`) and their layout.

:func:`layout_graph` is a layered (Sugiyama-style) top-down layout in pure Python, so the
HTML page needs no Graphviz: layers by longest path, long edges split into dummy points,
crossings reduced by barycentre sweeps, x placed by neighbour averages with minimum spacing.
"""
import collections
from collections.abc import Sequence
from typing import Any

from mxcnn.graph.inspector.counting import CONV_OPS, POOL_OPS, parse_tuple
from mxcnn.graph.inspector.summary import LayerRow, Summary, shape_text
from mxcnn.graph.symbol_json import is_true

__all__ = ["FOLDABLE_OPS", "fold_graph", "layout_graph", "describe",
           "NODE_W", "NODE_H", "DUMMY_W", "GAP_X", "GAP_Y"]

#: ops netscope-style graphs fold into the node that feeds them (in-place layers)
FOLDABLE_OPS = {"BatchNorm", "BatchNorm_v1", "Activation", "LeakyReLU", "relu", "sigmoid",
                "tanh", "clip", "hard_sigmoid", "Dropout", "_copy", "identity"}

NODE_W, NODE_H, DUMMY_W, GAP_X, GAP_Y = 210, 46, 16, 34, 40


def describe(row: LayerRow) -> str:
    """A short operator description: 'Conv 3x3/2 64', 'Pool max 3x3/2', 'FC 1000'."""
    a = row.attrs
    kernel = "x".join(str(v) for v in parse_tuple(a.get("kernel")))
    stride = parse_tuple(a.get("stride"))
    stride_text = "/%d" % stride[0] if stride and max(stride) > 1 else ""
    if row.op in CONV_OPS + ("Deconvolution",):
        groups = int(a.get("num_group", 1))
        dilate = parse_tuple(a.get("dilate"))
        extra = (" g%d" % groups if groups > 1 else "") + (" d%d" %
                                                           dilate[0] if dilate and max(dilate) > 1 else "")
        short = "Conv" if row.op != "Deconvolution" else "Deconv"
        return "%s %s%s, %s%s" % (short, kernel, stride_text, a.get("num_filter", "?"), extra)
    if row.op in POOL_OPS:
        if is_true(a.get("global_pool", "False")):
            return "Pool %s global" % a.get("pool_type", "max")
        return "Pool %s %s%s" % (a.get("pool_type", "max"), kernel, stride_text)
    if row.op == "FullyConnected":
        return "FC %s" % a.get("num_hidden", "?")
    if row.op == "Activation":
        return a.get("act_type", "act")
    if row.op == "LeakyReLU":
        return a.get("act_type", "leaky")
    if row.op in ("BatchNorm", "BatchNorm_v1"):
        return "BN"
    return row.op


# --------------------------------------------------------------------------------------------
# folding
# --------------------------------------------------------------------------------------------

def _fold_nodes(summary):
    """(nodes, node id of each input name / row index) with foldable rows joined to producers."""
    consumers = collections.Counter()
    incoming = collections.defaultdict(list)
    for src, out_index, dst in summary.edges:
        consumers[src] += 1
        incoming[dst].append((src, out_index))
    for head, _ in summary.heads:
        consumers[head] += 1
    nodes, node_of = [], {}
    for name, shape in summary.inputs.items():
        node_of[name] = len(nodes)
        nodes.append({"id": len(nodes), "rows": [], "title": name, "label": "Input",
                      "shape": shape_text(shape), "input": True})
    for row in summary.rows:
        sources = incoming[row.index]
        op_sources = [s for s, _ in sources if isinstance(s, int)]
        if (row.op in FOLDABLE_OPS and len(op_sources) == 1 and len(sources) == 1
                and consumers[op_sources[0]] == 1):
            node = nodes[node_of[op_sources[0]]]
            node["rows"].append(row.index)
            node_of[row.index] = node["id"]
            continue
        node_of[row.index] = len(nodes)
        nodes.append({"id": len(nodes), "rows": [row.index], "title": row.name, "input": False})
    for node in nodes:
        if node["rows"]:
            node["label"] = " + ".join(describe(summary.rows[i]) for i in node["rows"])
            node["shape"] = shape_text(summary.rows[node["rows"][-1]].output_shape)
    return nodes, node_of


def fold_graph(summary: Summary) -> tuple[list[dict[str, Any]], list[tuple[int, int, str]]]:
    """Netscope-style graph: conv -> BN -> activation chains folded into one node.

    An in-place-like operator (``FOLDABLE_OPS``) joins the node of its producer when it is
    that producer's only consumer.  Returns ``(nodes, edges)``: nodes are dicts with
    ``rows`` (indices into ``summary.rows``), ``title``, ``label``, ``shape``; input
    variables are nodes too; edges are ``(from, to, shape)`` between node ids.
    """
    rows = summary.rows
    nodes, node_of = _fold_nodes(summary)
    edges, seen = [], set()
    for src, out_index, dst in summary.edges:
        a, b = node_of[src], node_of[dst]
        if a == b or (a, b) in seen:
            continue
        seen.add((a, b))
        shape = summary.inputs[src] if not isinstance(src, int) else rows[src].output_shapes[
            min(out_index, len(rows[src].output_shapes) - 1)]
        edges.append((a, b, shape_text(shape)))
    return nodes, edges


# --------------------------------------------------------------------------------------------
# layered layout
# --------------------------------------------------------------------------------------------

class _Layers:
    """Nodes and dummy points by layer: ``vlayer``/``vwidth`` per point (nodes first), the
    point ``chains`` of each edge, ``up``/``down`` neighbours and ``layers`` (points per layer).
    """

    def __init__(self, n, edges):
        succ = collections.defaultdict(list)
        for a, b, _ in edges:
            succ[a].append(b)
        layer = [0] * n
        for a in range(n):  # node ids are in topological order
            for b in succ[a]:
                layer[b] = max(layer[b], layer[a] + 1)
        # chains of virtual points for edges spanning several layers
        self.n, self.vlayer, self.vwidth, self.chains = n, list(layer), [NODE_W] * n, []
        for a, b, shape in edges:
            chain = [a]
            for l in range(layer[a] + 1, layer[b]):
                self.vlayer.append(l)
                self.vwidth.append(DUMMY_W)
                chain.append(len(self.vlayer) - 1)
            chain.append(b)
            self.chains.append((a, b, shape, chain))
        self.total = len(self.vlayer)
        self.up, self.down = collections.defaultdict(list), collections.defaultdict(list)
        for _, _, _, chain in self.chains:
            for u, v in zip(chain, chain[1:]):
                self.down[u].append(v)
                self.up[v].append(u)
        self.depth = max(self.vlayer) + 1 if self.vlayer else 0
        self.layers = [[] for _ in range(self.depth)]
        for v in range(self.total):
            self.layers[self.vlayer[v]].append(v)


def _order_layers(g, sweeps):
    """Reorder ``g.layers`` in place by barycentre sweeps, alternating down and up."""
    pos = [0.0] * g.total
    for members in g.layers:
        for i, v in enumerate(members):
            pos[v] = float(i)
    for sweep in range(sweeps):
        order = range(1, g.depth) if sweep % 2 == 0 else range(g.depth - 2, -1, -1)
        nbrs = g.up if sweep % 2 == 0 else g.down
        for l in order:
            members = g.layers[l]
            bary = {v: (sum(pos[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else pos[v])
                    for v in members}
            members.sort(key=lambda v: (bary[v], v >= g.n))
            for i, v in enumerate(members):
                pos[v] = float(i)


def _place_x(g, sweeps):
    """x centre of every point: layers left to right, then pulled towards their neighbours."""
    x = [0.0] * g.total
    for members in g.layers:
        cursor = 0.0
        for v in members:
            x[v] = cursor + g.vwidth[v] / 2.0
            cursor += g.vwidth[v] + GAP_X
    both = {v: g.up[v] + g.down[v] for v in range(g.total)}
    for sweep in range(2 * sweeps + 1):  # down, up, ..., then both neighbours to balance
        nbrs = both if sweep == 2 * sweeps else (g.up if sweep % 2 == 0 else g.down)
        order = range(g.depth) if sweep % 2 == 0 else range(g.depth - 1, -1, -1)
        for l in order:
            members = g.layers[l]
            want = [(sum(x[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else x[v]) for v in members]
            placed = []
            for i, v in enumerate(members):  # left-to-right: keep order and spacing
                lo = placed[-1] + (g.vwidth[members[i - 1]] + g.vwidth[v]) / 2.0 + GAP_X if placed else -1e18
                placed.append(max(want[i], lo))
            shift = (sum(want) - sum(placed)) / len(placed) if placed else 0.0
            for v, px in zip(members, placed):
                x[v] = px + shift
    left = min(x[v] - g.vwidth[v] / 2.0 for v in range(g.total)) if g.total else 0.0
    return [xv - (left - 20) for xv in x]


def _ports(g, x):
    """x of each edge's start and end: the ports of nodes with several edges spread along
    their bottom/top sides, ordered by the x of the neighbouring point, so that arrow heads
    and shape labels do not pile up."""
    port_out, port_in = {}, {}
    outs, ins = collections.defaultdict(list), collections.defaultdict(list)
    for k, (_, _, _, chain) in enumerate(g.chains):
        outs[chain[0]].append((x[chain[1]], k))
        ins[chain[-1]].append((x[chain[-2]], k))
    for ports, groups in ((port_out, outs), (port_in, ins)):
        for v, items in groups.items():
            items.sort()
            span = min(NODE_W * 0.7, 40.0 * (len(items) - 1))
            for i, (_, k) in enumerate(items):
                offset = -span / 2 + span * i / (len(items) - 1) if len(items) > 1 else 0.0
                ports[k] = x[v] + offset
    return port_out, port_in


def layout_graph(nodes: Sequence[dict[str, Any]], edges: Sequence[tuple[int, int, str]],
                 sweeps: int = 4) -> tuple[list[tuple[int, int, str, list[float]]], tuple[float, float]]:
    """Place ``nodes``/``edges`` of :func:`fold_graph` top-down (see the module docstring).

    Sets ``x``/``y`` (centre) and ``w``/``h`` on each node; returns edge polylines
    ``[(from, to, shape, [x0, y0, x1, y1, ...])]`` and the bounding box (w, h).
    """
    g = _Layers(len(nodes), edges)
    _order_layers(g, sweeps)
    x = _place_x(g, sweeps)
    ys = [20 + NODE_H / 2.0 + l * (NODE_H + GAP_Y) for l in range(g.depth)]
    for node in nodes:
        node.update(x=round(x[node["id"]], 1), y=ys[g.vlayer[node["id"]]], w=NODE_W, h=NODE_H)
    port_out, port_in = _ports(g, x)
    polylines = []
    for k, (a, b, shape, chain) in enumerate(g.chains):
        points = [port_out[k], ys[g.vlayer[chain[0]]] + NODE_H / 2.0]
        for v in chain[1:-1]:
            points += [x[v], ys[g.vlayer[v]]]
        points += [port_in[k], ys[g.vlayer[chain[-1]]] - NODE_H / 2.0]
        polylines.append((a, b, shape, [round(p, 1) for p in points]))
    width = (max(x[v] + g.vwidth[v] / 2.0 for v in range(g.total)) + 20) if g.total else 0
    height = (ys[-1] + NODE_H / 2.0 + 20) if ys else 0
    return polylines, (round(width, 1), round(height, 1))
