"""graph.inspector: counting rules, known totals, text/DOT/HTML output and CLI errors."""
import json
import os
import re
import shutil
import sys
import warnings

import mxnet as mx
import pytest

from mxcnn import symbols
from mxcnn.graph import inspector as insp


def _summarize(sym, **shapes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return insp.summarize(sym, **shapes)


# ------------------------------------------------------------------ counting rules (exact)

def test_conv_group_dilation_deconv_fc_counts_are_exact():
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name="conv")   # 8x16x16
    x = mx.sym.BatchNorm(x, name="bn")
    x = mx.sym.Activation(x, act_type="relu", name="relu")
    x = mx.sym.Convolution(x, num_filter=8, kernel=(3, 3), pad=(2, 2), dilate=(2, 2),
                           num_group=8, no_bias=True, name="dw")                         # 8x16x16
    x = mx.sym.Convolution(x, num_filter=16, kernel=(1, 1), stride=(2, 2), num_group=2,
                           no_bias=True, name="gconv")                                   # 16x8x8
    x = mx.sym.Deconvolution(x, num_filter=4, kernel=(2, 2), stride=(2, 2), no_bias=True,
                             name="deconv")                                              # 4x16x16
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name="pool")    # 4x8x8
    x = mx.sym.FullyConnected(x, num_hidden=10, name="fc")
    s = _summarize(mx.sym.SoftmaxOutput(x, name="softmax"), data=(2, 3, 16, 16))
    by = {r.name: r for r in s.rows}
    assert by["conv"].macs == 2 * 8 * 16 * 16 * 3 * 3 * 3
    assert by["conv"].params == 8 * 3 * 9 + 8
    assert by["dw"].macs == 2 * 8 * 16 * 16 * 9          # depthwise: 1 input channel per filter
    assert by["gconv"].macs == 2 * 16 * 8 * 8 * (8 // 2)
    assert by["deconv"].macs == 2 * 16 * 8 * 8 * 4 * 2 * 2  # input elements x Cout x kh x kw
    assert by["fc"].macs == 2 * 256 * 10
    assert by["fc"].output_shape == (2, 10)
    assert by["bn"].macs == 0 and by["bn"].ops == 2 * 2 * 8 * 16 * 16
    assert by["bn"].params == 16 and by["bn"].aux == 16  # gamma/beta learnable, stats auxiliary
    assert by["pool"].ops == 2 * 4 * 8 * 8 * 4
    assert by["relu"].activation_bytes == 4 * 2 * 8 * 16 * 16
    assert s.total_macs == sum(by[n].macs for n in ("conv", "dw", "gconv", "deconv", "fc"))
    assert s.batch_size == 2


def test_unknown_operator_is_listed_counted_zero_and_warned_once():
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=4, kernel=(1, 1), name="conv")
    x = mx.sym.sort(x, axis=1, name="sorted1")
    x = mx.sym.sort(x, axis=1, name="sorted2")
    with pytest.warns(UserWarning, match="sort") as record:
        s = insp.summarize(x, data=(1, 3, 4, 4))
    assert len([w for w in record if "sort" in str(w.message)]) == 1
    rows = {r.name: r for r in s.rows}
    assert rows["sorted1"].macs == 0 and not rows["sorted1"].counted
    assert "(?)" in s.render() and "Not counted" in s.render()


def test_shared_weights_count_once():
    data = mx.sym.var("data")
    weight = mx.sym.var("shared_weight")
    a = mx.sym.FullyConnected(data, weight=weight, num_hidden=5, no_bias=True, name="a")
    b = mx.sym.FullyConnected(data, weight=weight, num_hidden=5, no_bias=True, name="b")
    s = _summarize(mx.sym.Group([a, b]), data=(1, 7))
    assert s.total_params == 35 and s.total_macs == 70


# ------------------------------------------------------------------ known totals

@pytest.mark.parametrize("network,num_layers,image_shape,classes,expected_macs,expected_params", [
    ("resnet", 20, (3, 32, 32), 10, 41e6, 0.27e6),          # He et al. 2016, CIFAR ResNet-20
    ("resnet", 50, (3, 224, 224), 1000, 4.1e9, 25.6e6),      # torchvision / GluonCV v1b
    ("vgg", 16, (3, 224, 224), 1000, 15.5e9, 138.4e6),       # Simonyan & Zisserman
    ("mobilenet", None, (3, 224, 224), 1000, 569e6, 4.2e6),  # Howard et al. 2017, Table 8
])
def test_known_totals(network, num_layers, image_shape, classes, expected_macs, expected_params):
    sym = symbols.get_symbol(network, num_classes=classes, num_layers=num_layers,
                             image_shape=image_shape)
    s = _summarize(sym, data=(1,) + image_shape)
    assert abs(s.total_macs - expected_macs) / expected_macs < 0.02, s.total_macs
    assert abs(s.total_params - expected_params) / expected_params < 0.02, s.total_params


def test_gluoncv_export_json_is_inspected(tmp_path, monkeypatch, capsys):
    """A symbol exported from GluonCV's model zoo (random init, offline) goes through the CLI."""
    # gluoncv 0.10.5 refuses to import beside torch>=2 (its torch version check): hide torch
    monkeypatch.setitem(sys.modules, "torch", None)
    model_zoo = pytest.importorskip("gluoncv.model_zoo")
    net = model_zoo.get_model("cifar_resnet20_v1", pretrained=False)
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    prefix = str(tmp_path / "cifar_resnet20_v1")
    net.export(prefix)
    assert insp.main([prefix + "-symbol.json", "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    totals = json.loads((tmp_path / "s.json").read_text())["totals"]
    assert 40e6 < totals["macs"] < 42e6 and 0.26e6 < totals["params"] < 0.28e6


# ------------------------------------------------------------------ text table

def test_text_table_grouping_and_sorting():
    s = _summarize(symbols.get_symbol("resnet", num_layers=20), data=(1, 3, 32, 32))
    text = s.render()
    assert "Convolution" in text and "16x32x32" in text and "40.81M" in text
    grouped = s.grouped("stage")
    names = [g.name for g in grouped]
    assert len(names) >= 4 and names[0] == "stem" and names[-1] == "head", names
    assert sum(g.macs for g in grouped) == s.total_macs
    assert sum(g.params for g in grouped) == s.total_params
    table = s.render(sort_by="macs").splitlines()
    macs = [int(line.split()[-4].replace(",", "")) for line in table[3:3 + len(s.rows)]]
    assert macs == sorted(macs, reverse=True)
    with pytest.raises(insp.InspectError, match="sort_by"):
        s.render(sort_by="speed")


# ------------------------------------------------------------------ DOT / SVG / HTML

def test_dot_text_has_shapes_on_edges_and_folds_bn_relu(tmp_path):
    s = _summarize(symbols.get_symbol("resnet", num_layers=20), data=(1, 3, 32, 32))
    nodes, edges = insp.fold_graph(s)
    assert len(nodes) < len(s.rows)  # conv-BN-ReLU chains folded
    assert any("+ BN + relu" in n["label"] for n in nodes)
    assert sum(len(n["rows"]) for n in nodes) == len(s.rows)  # every layer is in one node
    dot = tmp_path / "r20.dot"
    assert insp.main(["resnet", "--num-layers", "20", "--quiet", "--dot", str(dot)]) == 0
    text = dot.read_text()
    assert text.startswith("digraph") and 'label="1x16x32x32"' in text
    assert text.count("->") == len(edges)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' binary not installed")
def test_svg_and_pdf_render_with_graphviz(tmp_path):
    svg, pdf = tmp_path / "g.svg", tmp_path / "g.pdf"
    assert insp.main(["lenet", "--image-shape", "1,28,28", "--quiet",
                      "--svg", str(svg), "--pdf", str(pdf)]) == 0
    assert "<svg" in svg.read_text() and "1x6x28x28" in svg.read_text()
    assert pdf.read_bytes().startswith(b"%PDF")


def test_html_page_is_self_contained(tmp_path):
    page = tmp_path / "p.html"
    s = _summarize(symbols.get_symbol("googlenet", num_classes=1000, image_shape=(3, 224, 224)),
                   data=(1, 3, 224, 224))
    insp.write_html(s, str(page))
    text = page.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import|https?://", text)
    payload = re.search(r'id="mxcnn-data">(.*?)</script>', text, re.S).group(1)
    data = json.loads(payload)
    assert len(data["rows"]) == len(s.rows) and data["totals"]["macs"] == s.total_macs
    ys = [n[1] for n in data["nodes"]]
    for a, b, _, pts in data["edges"]:  # top-down: every edge goes downwards
        assert ys[a] < ys[b] and pts[1] < pts[-1]
    assert oct(os.stat(page).st_mode & 0o777) != oct(0o600)


# ------------------------------------------------------------------ CLI errors (exit 2, one line)

def _cli_error(capsys, argv):
    code = insp.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_bad_inputs(tmp_path, capsys):
    not_symbol = tmp_path / "config.json"
    not_symbol.write_text('{"lr": 0.1}')
    assert "not an MXNet symbol" in _cli_error(capsys, [str(not_symbol)])
    broken = tmp_path / "broken.json"
    broken.write_text("{nodes")
    assert "not JSON" in _cli_error(capsys, [str(broken)])
    other_input = tmp_path / "x-symbol.json"
    mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=3, name="fc").save(str(other_input))
    assert "--input-shape" in _cli_error(capsys, [str(other_input)])
    assert "no shape for input(s) y" in _cli_error(
        capsys, [str(_two_inputs(tmp_path)), "--input-shape", "x=1,4"])
    assert "unknown network" in _cli_error(capsys, ["resnot"])
    assert "no such symbol file" in _cli_error(capsys, ["missing-symbol.json"])
    big_kernel = tmp_path / "k-symbol.json"
    mx.sym.Convolution(mx.sym.var("data"), num_filter=2, kernel=(5, 5), name="c").save(str(big_kernel))
    assert "shape inference failed" in _cli_error(  # a 5x5 kernel on a 3x3 input
        capsys, [str(big_kernel), "--input-shape", "data=1,1,3,3"])
    # the good path of the same file works and prints the table
    assert insp.main([str(other_input), "--input-shape", "x=2,5"]) == 0
    assert "FullyConnected" in capsys.readouterr().out


def _two_inputs(tmp_path):
    path = tmp_path / "two-symbol.json"
    sym = mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=3, name="fa") + \
        mx.sym.FullyConnected(mx.sym.var("y"), num_hidden=3, name="fb")
    sym.save(str(path))
    return path


# ------------------------------------------------------------------ hostile input (exit 2, one line)

_AS_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                              reason="root ignores file modes")
_R20 = ["resnet", "--num-layers", "20", "--quiet"]
_LENET = ["lenet", "--image-shape", "1,28,28", "--quiet"]

# (case, argv with {tmp} for a scratch folder, fragment the one stderr line must hold).
# Each one raised a traceback, hung, or named the wrong file before mxcnn-inspect checked it.
HOSTILE = [
    ("batch beyond int32", _R20 + ["--batch-size", "3000000000"],
     "--batch-size must be between 1 and 2147483647"),
    ("input size beyond int32", _R20 + ["--input-shape", "data=1,3,99999999999999999999999,32"],
     "input shape for 'data' has a size of 99999999999999999999999"),
    ("classes beyond int32", _R20 + ["--num-classes", "3000000000"],
     "--num-classes must be between 1 and 2147483647"),
    ("image side beyond int32", ["resnet", "--num-layers", "18", "--image-shape", "3,3000000000,32"],
     "--image-shape size must be between 1 and 2147483647"),
    pytest.param("absurd depth (built for hours before)", ["resnet", "--num-layers", "200000000000"],
                 "--num-layers must be between 1 and 10000", marks=pytest.mark.timeout(120)),
    ("option MXNet refuses", ["wrn", "--num-layers", "16", "--option", "widen_factor=100000000000"],
     "cannot build wrn with these options"),
    ("symbol path is a folder", ["{tmp}/dir-symbol.json"], "is a folder"),
    ("output under a regular file", _LENET + ["--html", "/etc/passwd/x.html"],
     "cannot write /etc/passwd/x.html: /etc/passwd is a file, not a folder"),
    ("output is a folder", _LENET + ["--dot", "{tmp}"], "it is a folder; give a file name"),
    pytest.param("output folder refuses new files", _LENET + ["--json", "/sys/x.json"],
                 "cannot write /sys/x.json: ",
                 marks=pytest.mark.skipif(not os.path.isdir("/sys"), reason="no /sys")),
    pytest.param("read-only output folder", _LENET + ["--json", "{tmp}/ro/x.json"],
                 "cannot write {tmp}/ro/x.json: Permission denied", marks=_AS_ROOT),
    pytest.param("unreadable symbol file", ["{tmp}/secret-symbol.json"],
                 "cannot read {tmp}/secret-symbol.json", marks=_AS_ROOT),
]


def _hostile_scratch(tmp_path):
    (tmp_path / "dir-symbol.json").mkdir()
    (tmp_path / "ro").mkdir()
    os.chmod(str(tmp_path / "ro"), 0o555)
    secret = tmp_path / "secret-symbol.json"
    mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="fc").save(str(secret))
    os.chmod(str(secret), 0)


@pytest.mark.parametrize("case,argv,fragment", HOSTILE, ids=[
    c.values[0] if hasattr(c, "values") else c[0] for c in HOSTILE])
def test_cli_hostile_input(tmp_path, capsys, case, argv, fragment):
    _hostile_scratch(tmp_path)
    fill = lambda text: text.replace("{tmp}", str(tmp_path))  # noqa: E731
    err = _cli_error(capsys, [fill(a) for a in argv])
    assert err.startswith("mxcnn-inspect: error: ") and fill(fragment) in err, err
    assert not [p for p in os.listdir(str(tmp_path)) if p.endswith(".tmp")]


def test_svg_without_the_graphviz_package_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz -> ImportError
    err = _cli_error(capsys, _LENET + ["--svg", str(tmp_path / "g.svg")])
    assert "needs the graphviz Python package" in err
    assert not (tmp_path / "g.svg").exists()


@pytest.mark.parametrize("module", ["mxcnn.graph.inspector"])
def test_module_entry_points_refuse_a_huge_batch(module):
    """`python -m mxcnn.graph.inspector NAME --batch-size HUGE`: one line, no traceback."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-m", module, "resnet", "--batch-size", "3000000000"],
                          capture_output=True, text=True, cwd=root, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root))
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("[")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "--batch-size must be between 1 and" in lines[0], proc.stderr
