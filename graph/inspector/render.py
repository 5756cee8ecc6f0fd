"""Views of a :class:`Summary` written to files: Graphviz DOT/SVG/PDF and the offline HTML page.

Every file is written atomically with the user's umask (``common.atomic_write_text``); a
path that cannot be written raises :class:`InspectError` naming the file and the fix.

A symbol file is input from elsewhere: its names and attributes reach the HTML page only
HTML-escaped (the title) or as JSON data made safe inside ``<script>`` (:func:`script_json`),
and the page's script puts them into the DOM as text.  Opening a page runs nothing of it.
"""
import html as _html
import json
import os
import re
import subprocess
from typing import Any

from mxcnn import common
from mxcnn.graph.inspector.layout import NODE_H, NODE_W, fold_graph, layout_graph
from mxcnn.graph.inspector.summary import InspectError, Summary, human_count, shape_text

__all__ = ["to_dot", "write_graphviz", "html_page", "write_html", "write_output", "script_json"]

_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "inspect.html")

_COLORS = {"Convolution": "#9ecae1", "Deconvolution": "#9ecae1", "FullyConnected": "#fdae6b",
           "Pooling": "#a1d99b", "BatchNorm": "#dadaeb", "Activation": "#fcbba1",
           "Concat": "#fdd0a2", "concat": "#fdd0a2", "elemwise_add": "#c7e9c0",
           "_Plus": "#c7e9c0", "_plus": "#c7e9c0", "add_n": "#c7e9c0", "ElementWiseSum": "#c7e9c0",
           "SoftmaxOutput": "#bcbddc", "softmax": "#bcbddc", "input": "#fee391"}


def _color(rows, node):
    return _COLORS.get(rows[node["rows"][0]].op if node["rows"] else "input", "#e5e5e5")


def write_output(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (str or bytes) to ``path`` atomically, or raise InspectError saying why not."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InspectError("cannot write %s: it is a folder; give a file name" % path)
    if not os.path.isdir(folder):
        why = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise InspectError("cannot write %s: %s %s; choose another path" % (path, folder, why))
    try:
        common.atomic_write_text(path, data, make_dirs=False)
    except OSError as err:  # read-only folder or file system, disk full, ...
        raise InspectError("cannot write %s: %s; choose a writable folder"
                           % (path, err.strerror or err))


def to_dot(summary: Summary, title: str | None = None) -> str:
    """Graphviz DOT text of the folded graph, output shapes on the edges (no binary needed)."""
    nodes, edges = fold_graph(summary)
    rows = summary.rows

    def quote(text):
        return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"')
    lines = ["digraph %s {" % quote(title or summary.name),
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=10];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8, color="#666666"];']
    for node in nodes:
        macs = sum(rows[i].macs for i in node["rows"])
        params = sum(rows[i].params for i in node["rows"])
        detail = node["label"] + ("\\nparams %s  MACs %s" % (human_count(params), human_count(macs))
                                  if node["rows"] else "")
        lines.append("  n%d [label=%s, fillcolor=%s];" % (
            node["id"], quote(node["title"] + "\\n" + detail).replace("\\\\n", "\\n"),
            quote(_color(rows, node))))
    for a, b, shape in edges:
        lines.append("  n%d -> n%d [label=%s];" % (a, b, quote(shape)))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _pipe(source, fmt):
    """``source`` rendered by Graphviz's ``dot`` as ``fmt`` (bytes)."""
    try:
        import graphviz
    except ImportError:
        raise InspectError("%s output needs the graphviz Python package (pip install graphviz) "
                           "and its 'dot' binary; or write --dot instead" % fmt.upper())
    if fmt not in graphviz.FORMATS:
        raise InspectError("Graphviz has no output format %r; use svg, pdf, png or dot" % fmt)
    try:
        return graphviz.Source(source).pipe(format=fmt)
    except (graphviz.ExecutableNotFound, subprocess.CalledProcessError, OSError) as err:
        raise InspectError("cannot render %s with Graphviz (%s); install the 'dot' binary "
                           "(apt-get install graphviz) or write --dot instead"
                           % (fmt.upper(), common.error_line(err)))


def write_graphviz(summary: Summary, path: str, fmt: str | None = None, title: str | None = None) -> str:
    """Write DOT (always possible) or SVG/PDF (needs Graphviz's ``dot`` binary) to ``path``."""
    fmt = fmt or os.path.splitext(path)[1].lstrip(".").lower() or "dot"
    source = to_dot(summary, title)
    write_output(path, source if fmt in ("dot", "gv") else _pipe(source, fmt))
    return path


def _page_data(summary, title):
    """The JSON payload the page's script draws: rows, folded nodes with positions, edges."""
    nodes, edges = fold_graph(summary)
    polylines, (width, height) = layout_graph(nodes, edges)
    rows = summary.rows
    node_of_row = {i: node["id"] for node in nodes for i in node["rows"]}
    return {
        "title": title or summary.name,
        "inputs": {k: shape_text(v) for k, v in summary.inputs.items()},
        "totals": {"params": summary.total_params, "aux": summary.total_aux,
                   "macs": summary.total_macs, "ops": summary.total_ops,
                   "bytes": summary.total_activation_bytes, "layers": len(rows)},
        "warnings": summary.warnings,
        "rows": [[r.name, r.op, shape_text(r.output_shape), r.params, r.macs, r.ops,
                  r.activation_bytes, r.stage, r.unit, node_of_row[r.index], int(r.counted),
                  {k: str(v) for k, v in r.attrs.items()},
                  {k: shape_text(v) for k, v in r.param_shapes.items()},
                  [shape_text(s) for s in r.output_shapes]] for r in rows],
        "nodes": [[n["x"], n["y"], n["title"], n["label"], n["shape"], n["rows"], _color(rows, n)]
                  for n in nodes],
        "edges": [[a, b, shape, pts] for a, b, shape, pts in polylines],
        "size": [width, height], "node_size": [NODE_W, NODE_H],
    }


#: what :func:`script_json` writes as JSON escapes: "<" and ">" (no ``<!--``, ``<script`` or
#: ``</script`` can form), "&", and the line separators older JavaScript parsers reject
_SCRIPT_ESCAPES = {ord(c): "\\u%04x" % ord(c) for c in "<>&\u2028\u2029"}
_MARKERS = re.compile(r"__MXCNN_TITLE__|/\*__MXCNN_DATA__\*/null")


def script_json(value: Any) -> str:
    """``value`` as JSON text that is inert inside an HTML ``<script>`` element: ASCII only,
    with ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\uXXXX`` escapes (``JSON.parse`` and
    ``json.loads`` read back ``value``)."""
    return json.dumps(value, separators=(",", ":")).translate(_SCRIPT_ESCAPES)


def html_page(summary: Summary, title: str | None = None) -> str:
    """The self-contained interactive page (str): canvas graph, details panel, linked table."""
    payload = _page_data(summary, title)
    try:
        with open(_TEMPLATE, encoding="utf-8") as f:
            template = f.read()
    except OSError as err:
        raise InspectError("cannot read the page template %s (%s); reinstall mxcnn"
                           % (_TEMPLATE, err.strerror or err))
    values = {"__MXCNN_TITLE__": _html.escape(payload["title"], quote=True),
              "/*__MXCNN_DATA__*/null": script_json(payload)}
    # one pass: text from the symbol file is never searched for markers again
    return _MARKERS.sub(lambda match: values[match.group(0)], template)


def write_html(summary: Summary, path: str, title: str | None = None) -> str:
    """Write :func:`html_page` atomically to ``path``."""
    write_output(path, html_page(summary, title))
    return path
