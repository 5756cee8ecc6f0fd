"""inference/export_onnx.py: MXNet's exporter + ONNX Runtime agree on our families' checkpoints."""
import os

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols

onnx = pytest.importorskip("onnx", reason="pip install onnx==1.15.0 onnxruntime==1.18.1")
ort = pytest.importorskip("onnxruntime", reason="pip install onnx==1.15.0 onnxruntime==1.18.1")
from mxcnn.inference import export_onnx  # noqa: E402


def checkpoint(prefix, sym, data_shape, seed=0, fix_gamma_scale=None):
    """Random weights (and non-trivial BN statistics) saved with Module.save_checkpoint."""
    labels = [n for n in sym.list_arguments() if n.endswith("label")]
    mod = mx.mod.Module(sym, label_names=labels)
    mod.bind([("data", data_shape)], [(n, data_shape[:1]) for n in labels] or None,
             for_training=False)
    mx.random.seed(seed)
    mod.init_params(mx.init.Xavier(magnitude=1))
    args, aux = mod.get_params()
    rng = np.random.RandomState(seed)
    for name in aux:
        aux[name][:] = rng.uniform(0.5, 1.5, aux[name].shape) if "var" in name else \
            rng.uniform(-0.2, 0.2, aux[name].shape)
    for name in args:
        if name.endswith("gamma"):
            args[name][:] = rng.uniform(0.5, 1.5, args[name].shape)
    mod.set_params(args, aux)
    mod.save_checkpoint(prefix, 1)
    return prefix


def mxnet_reference(prefix, x):
    """Output 0 of the checkpoint from a *training* bind (no oneDNN inference fusion)."""
    sym, args, aux = mx.model.load_checkpoint(prefix, 1)
    labels = [n for n in sym.list_arguments() if n.endswith("label")]
    mod = mx.mod.Module(sym, label_names=labels)
    mod.bind([("data", x.shape)], [(n, x.shape[:1]) for n in labels] or None)
    mod.set_params(args, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)], [mx.nd.zeros(x.shape[:1]) for _ in labels]),
                is_train=False)
    return mod.get_outputs()[0].asnumpy()


def run_onnx(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("network,num_layers,options", [
    ("resnet", 20, {"shortcut_type": "A"}),   # zero-padded shortcut: slice/zeros_like/concat
    ("preact_resnet", 20, {}),                 # where MXNet's inference fusion goes wrong
    ("lenet", None, {}),                       # FullyConnected on 4-D input (implicit flatten)
    ("mobilenet_v2", None, {}),                # depthwise convolutions, relu6 as clip
])
def test_family_exports_and_matches(tmp_path, network, num_layers, options):
    shape = (1, 28, 28) if network == "lenet" else (3, 32, 32)
    sym = symbols.get_symbol(network, num_layers=num_layers, image_shape=shape, **options)
    prefix = checkpoint(str(tmp_path / network), sym, (2,) + shape)
    out = str(tmp_path / "model.onnx")
    result = export_onnx.export_checkpoint(prefix, 1, out, shape, batch_size=2)
    assert result["max_abs_diff"] <= 1e-4
    onnx.checker.check_model(onnx.load(out))
    # independent check on other input, against MXNet's training graph
    x = np.random.RandomState(1).uniform(-2, 2, (2,) + shape).astype(np.float32)
    expected = mxnet_reference(prefix, x)
    got = run_onnx(out, x)
    assert got.shape == expected.shape == (2, 10)
    assert np.abs(got - expected).max() < 1e-4
    assert np.allclose(got.sum(axis=1), 1, atol=1e-5) and expected.max(axis=1).min() < 0.999


def test_logits_head_fix_gamma_and_adaptive_pool_rewrites(tmp_path):
    """Gluon-style logits output, BatchNorm with MXNet's default fix_gamma, adaptive pooling."""
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=6, kernel=(3, 3), pad=(1, 1), name="conv")
    x = mx.sym.BatchNorm(x, name="bn")  # fix_gamma defaults to True: gamma is ignored by MXNet
    x = mx.sym.contrib.AdaptiveAvgPooling2D(x, output_size=(2, 2), name="resize")
    logits = mx.sym.FullyConnected(x, num_hidden=5, name="fc")
    prefix = checkpoint(str(tmp_path / "logits"), logits, (3, 3, 8, 8))
    out = str(tmp_path / "logits.onnx")
    result = export_onnx.export_checkpoint(prefix, 1, out, (3, 8, 8), batch_size=3,
                                           dynamic_batch=True)
    assert any("fix_gamma" in n for n in result["rewrites"])
    assert any("adaptive" in n for n in result["rewrites"])
    x = np.random.RandomState(2).uniform(-1, 1, (5, 3, 8, 8)).astype(np.float32)  # other batch
    expected = mxnet_reference(prefix, x)
    assert np.abs(run_onnx(out, x) - expected).max() < 1e-4 and np.abs(expected).max() > 0.01


def _cli_error(capsys, argv):
    assert export_onnx.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_writes_atomically_and_reports_errors(tmp_path, capsys):
    sym = symbols.get_symbol("resnet", num_layers=20)
    prefix = checkpoint(str(tmp_path / "r20"), sym, (1, 3, 32, 32))
    assert export_onnx.main(["--model-prefix", prefix, "--load-epoch", "1"]) == 0
    assert "ONNX Runtime matches MXNet" in capsys.readouterr().out
    out = prefix + "-0001.onnx"
    before = open(out, "rb").read()
    # a failed verification never replaces an existing file, nor leaves temp files
    message = _cli_error(capsys, ["--model-prefix", prefix, "--load-epoch", "1", "--output", out,
                                  "--tolerance", "-1"])
    assert "not written" in message
    assert open(out, "rb").read() == before
    assert sorted(os.listdir(str(tmp_path))) == ["r20-0001.onnx", "r20-0001.params", "r20-symbol.json"]
    # bad input: missing epoch, params of another network, an operator the exporter lacks
    assert "--load-epoch 5" in _cli_error(capsys, ["--model-prefix", prefix, "--load-epoch", "5"])
    symbols.get_symbol("resnet", num_layers=32).save(prefix + "-symbol.json")
    assert "does not match" in _cli_error(capsys, ["--model-prefix", prefix, "--load-epoch", "1"])
    odd = mx.sym.sort(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=4, name="fc"), name="odd")
    odd_prefix = checkpoint(str(tmp_path / "odd"), odd, (1, 3))
    message = _cli_error(capsys, ["--model-prefix", odd_prefix, "--load-epoch", "1",
                                  "--image-shape", "3,1,1"])
    assert "cannot convert" in message


# ------------------------------------------------------------------ hostile input, one table

def small_net():
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv")
    x = mx.sym.Pooling(mx.sym.relu(x), global_pool=True, pool_type="avg", kernel=(1, 1))
    return mx.sym.SoftmaxOutput(mx.sym.FullyConnected(x, num_hidden=3, name="fc"), name="softmax")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small checkpoint (epoch 1), one with a truncated params file and one with a corrupt .json."""
    folder = tmp_path_factory.mktemp("hostile_onnx")
    prefixes = {name: checkpoint(str(folder / name), small_net(), (1, 3, 8, 8))
                for name in ("ok", "cut", "bad_state")}
    with open(prefixes["cut"] + "-0001.params", "r+b") as f:
        f.truncate(64)
    with open(prefixes["bad_state"] + "-0001.json", "w") as f:
        f.write("{not json")
    (folder / "a_file").write_text("x")
    prefixes["dir"] = str(folder)
    return prefixes


EXPORT_BAD_INPUT = [
    # (case, prefix key, extra argv, expected fragment)
    ("missing epoch", "ok", ["--load-epoch", "5"], "--load-epoch 5"),
    ("truncated params", "cut", [], "truncated or corrupt"),
    ("corrupt training state", "bad_state", [], "bad_state-0001.json is corrupt"),
    ("output under a file", "ok", ["--output", "{dir}/a_file/x.onnx"], "is a file, not a folder"),
    ("output is a folder", "ok", ["--output", "{dir}"], "is a folder"),
    ("output folder missing", "ok", ["--output", "{dir}/no/such/x.onnx"], "does not exist"),
    ("huge batch", "ok", ["--batch-size", "3000000000"], "2^31"),
    ("bad image shape", "ok", ["--image-shape", "3,a,8"], "C,H,W"),
    ("batch zero", "ok", ["--batch-size", "0"], "at least 1"),
]


@pytest.mark.parametrize("case,key,extra,expected", EXPORT_BAD_INPUT,
                         ids=[c[0] for c in EXPORT_BAD_INPUT])
def test_export_bad_input_table(small, capsys, case, key, extra, expected):
    extra = [a.format(dir=small["dir"]) for a in extra]
    argv = ["--model-prefix", small[key], "--load-epoch", "1", "--image-shape", "3,8,8"]
    if "--image-shape" in extra or key == "bad_state":
        argv = argv[:-2]  # the .json is read for the default image shape
    assert expected in _cli_error(capsys, argv + extra), case


def test_export_read_only_folder(small, tmp_path, monkeypatch, capsys):
    """A folder the user cannot write (faked: the temporary file cannot be created, as for
    a non-root user in a 0555 folder); nothing is left behind."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = str(tmp_path / "model.onnx")
    message = _cli_error(capsys, ["--model-prefix", small["ok"], "--load-epoch", "1",
                                  "--image-shape", "3,8,8", "--output", out])
    assert "cannot write %s (Permission denied)" % out in message and "--output" in message
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_really_read_only_folder(small, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    assert "Permission denied" in _cli_error(capsys, ["--model-prefix", small["ok"], "--load-epoch",
                                                      "1", "--output", str(folder / "m.onnx")])


def test_export_batch_beyond_memory(small, tmp_path, monkeypatch, capsys):
    from mxcnn.inference import predict
    monkeypatch.setattr(predict, "_available_bytes", lambda: 2 ** 10)
    argv = ["--model-prefix", small["ok"], "--load-epoch", "1", "--image-shape", "3,8,8",
            "--batch-size", "64", "--output", str(tmp_path / "m.onnx")]
    assert "memory is available" in _cli_error(capsys, argv)
    assert export_onnx.main(argv + ["--no-verify"]) == 0  # nothing is bound without verification
    assert os.path.isfile(str(tmp_path / "m.onnx"))
