"""inference/score.py and inference/predict.py on checkpoints made here with Module.save_checkpoint."""
import json
import os
import re
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.common import devices
from mxcnn.inference import predict, score
from tests.hostile_files import bomb_png, run_with_peak_memory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}  # RGB, class order
STATS = {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0], "classes": list(COLOURS),
         "num_classes": 3, "image_shape": [3, 8, 8]}


def colour_net(extra_head=False):
    """1x1 conv (identity) -> BN -> ReLU -> global pool -> FC (identity): argmax = dominant colour."""
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=3, kernel=(1, 1), no_bias=True, name="conv")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn")
    x = mx.sym.Activation(x, act_type="relu", name="relu")
    x = mx.sym.Flatten(mx.sym.Pooling(x, global_pool=True, pool_type="avg", kernel=(1, 1), name="pool"))
    main = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(x, num_hidden=3, name="fc1"), name="softmax")
    if not extra_head:
        return main
    # a deep-supervision style second head that always prefers the *next* colour
    aux = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(x, num_hidden=3, name="aux_fc"), name="aux_softmax")
    return mx.sym.Group([main, aux])


def save(prefix, sym, epoch=3, num_hidden=3):
    eye = mx.nd.array(np.eye(3) * 10)
    args = {"conv_weight": mx.nd.array(np.eye(3).reshape(3, 3, 1, 1)), "bn_gamma": mx.nd.ones(3),
            "bn_beta": mx.nd.zeros(3), "fc1_weight": mx.nd.array(np.eye(num_hidden, 3) * 10),
            "fc1_bias": mx.nd.zeros(num_hidden)}
    if "aux_fc_weight" in sym.list_arguments():
        args["aux_fc_weight"] = mx.nd.array(np.roll(np.eye(3), 1, axis=0) * 10)
        args["aux_fc_bias"] = mx.nd.zeros(3)
    del eye
    aux = {"bn_moving_mean": mx.nd.zeros(3), "bn_moving_var": mx.nd.ones(3)}
    mod = mx.mod.Module(sym, label_names=[n for n in sym.list_arguments() if n.endswith("label")])
    mod.bind([("data", (1, 3, 8, 8))], [(n, (1,)) for n in mod._label_names], for_training=False)
    mod.set_params(args, aux)
    mod.save_checkpoint(prefix, epoch)
    return prefix


def colour_image(rgb, rng):
    image = np.clip(np.array(rgb, np.float32) * 0.8 + rng.uniform(0, 40, (8, 8, 3)), 0, 255)
    return image.astype(np.uint8)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    """A 30-image colour .rec (3 deliberately mislabelled), its stats and two PNG files."""
    folder = tmp_path_factory.mktemp("score")
    rng = np.random.RandomState(0)
    rec = mx.recordio.MXIndexedRecordIO(str(folder / "colours_val.idx"),
                                        str(folder / "colours_val.rec"), "w")
    for i in range(30):
        label = i % 3
        written = (label + 1) % 3 if i in (4, 11, 25) else label
        header = mx.recordio.IRHeader(0, float(written), i, 0)
        bgr = colour_image(COLOURS[list(COLOURS)[label]], rng)[:, :, ::-1]
        rec.write_idx(i, mx.recordio.pack_img(header, bgr, quality=3, img_fmt=".png"))
    rec.close()
    (folder / "colours_stats.json").write_text(json.dumps(STATS))
    for name, rgb in COLOURS.items():
        cv2.imwrite(str(folder / ("%s.png" % name)), colour_image(rgb, rng)[:, :, ::-1])
    save(str(folder / "net"), colour_net())
    save(str(folder / "ds"), colour_net(extra_head=True))
    return folder


def test_score_counts_every_record_once(fixture_dir):
    result = score.score_rec(str(fixture_dir / "net"), 3, str(fixture_dir / "colours_val.rec"),
                             batch_size=8, stats=str(fixture_dir / "colours_stats.json"))
    assert result["samples"] == 30  # 3 full batches + 6 of the padded last one
    assert result["top-1"] == pytest.approx(27 / 30)
    assert result["top-5"] == 1.0 and result["img/s"] > 0


def test_grouped_symbol_is_scored_on_output_0(fixture_dir):
    result = score.score_rec(str(fixture_dir / "ds"), 3, str(fixture_dir / "colours_val.rec"),
                             batch_size=7, stats=str(fixture_dir / "colours_stats.json"))
    assert result["top-1"] == pytest.approx(27 / 30)  # the aux head would score 1/10


def test_cli_score_and_predict(fixture_dir, capsys):
    prefix, stats = str(fixture_dir / "net"), str(fixture_dir / "colours_stats.json")
    assert score.main(["--model-prefix", prefix, "--load-epoch", "3", "--data-val",
                       str(fixture_dir / "colours_val.rec"), "--batch-size", "8", "--stats", stats,
                       "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top-1"] == pytest.approx(0.9)
    images = [str(fixture_dir / ("%s.png" % c)) for c in COLOURS]
    assert score.main(["--model-prefix", prefix, "--load-epoch", "3", "--stats", stats,
                       "--predict"] + images + ["--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for colour, line in zip(COLOURS, lines):
        assert line.split(": ", 1)[1].startswith(colour + " ")  # best class first, by name
        assert line.count(",") == 1  # top-2


def test_predict_resizes_and_crops_larger_images(fixture_dir, tmp_path):
    big = tmp_path / "big_red.jpg"
    image = np.zeros((60, 90, 3), np.uint8)
    image[:, :, 2] = 220  # red in BGR
    cv2.imwrite(str(big), image)
    p = predict.Predictor(str(fixture_dir / "net"), 3, stats=str(fixture_dir / "colours_stats.json"))
    array = predict.preprocess_image(str(big), (3, 8, 8), p.stats)
    assert array.shape == (3, 8, 8) and array[0].mean() > 0.8 and abs(array[2].mean()) < 0.05
    [top] = p.predict_files([str(big)], top_k=1)
    assert top[0][:2] == (0, "red")


def test_inference_bind_matches_training_graph_for_preact_resnet(tmp_path):
    """mxnet 1.9.1's oneDNN fusion of inference binds miscomputes PreAct ResNet; ours does not."""
    sym = symbols.get_symbol("preact_resnet", num_layers=20)
    mod = mx.mod.Module(sym)
    mod.bind([("data", (4, 3, 32, 32))], [("softmax_label", (4,))])
    mx.random.seed(0)
    mod.init_params(mx.init.Xavier(magnitude=2))
    args, aux = mod.get_params()
    rng = np.random.RandomState(0)
    for name in aux:
        aux[name][:] = rng.uniform(0.5, 1.5, aux[name].shape) if "var" in name else \
            rng.uniform(-0.2, 0.2, aux[name].shape)
    mod.set_params(args, aux)
    x = mx.nd.array(rng.uniform(-1, 1, (4, 3, 32, 32)))
    mod.forward(mx.io.DataBatch([x], [mx.nd.zeros(4)]), is_train=False)
    reference = mod.get_outputs()[0].asnumpy()
    inference = predict.bind_inference(predict.inference_symbol(sym), "data", (4, 3, 32, 32), args, aux)
    inference.forward(mx.io.DataBatch([x]), is_train=False)
    assert np.abs(inference.get_outputs()[0].asnumpy() - reference).max() < 1e-5


@pytest.mark.parametrize("contexts", [1, 2])
def test_numpy_forward_matches_module_forward(contexts):
    """Straight into the executor (one context) or split by Module (two): the Module's outputs,
    and each call sees its own batch."""
    sym = symbols.get_symbol("resnet", num_layers=8, num_classes=10)
    mod = mx.mod.Module(sym)
    mod.bind([("data", (4, 3, 32, 32))], [("softmax_label", (4,))])
    mx.random.seed(0)
    mod.init_params(mx.init.Xavier(magnitude=2))
    args, aux = mod.get_params()
    ctx = [mx.cpu(i) for i in range(contexts)]
    module = predict.bind_inference(predict.inference_symbol(sym), "data", (4, 3, 32, 32), args, aux, ctx)
    run = predict.numpy_forward(module)
    rng = np.random.RandomState(0)
    for _ in range(2):
        x = rng.uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
        got = run(x)
        module.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
        expected = module.get_outputs()[0].asnumpy()
        assert got.shape == (4, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ bad input: exit 2, one line

def _error(capsys, argv):
    assert score.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_inputs(fixture_dir, tmp_path, capsys):
    rec, stats = str(fixture_dir / "colours_val.rec"), str(fixture_dir / "colours_stats.json")
    base = ["--stats", stats, "--data-val", rec]
    assert "--load-epoch 9" in _error(capsys, ["--model-prefix", str(fixture_dir / "net"),
                                               "--load-epoch", "9"] + base)
    # params of a 4-class head under the 3-class symbol
    wrong = save(str(tmp_path / "wrong"), colour_net(), num_hidden=3)
    mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=4, name="fc1"),
                         name="softmax").save(wrong + "-symbol.json")
    message = _error(capsys, ["--model-prefix", wrong, "--load-epoch", "3"] + base)
    assert "does not match" in message and "fc1_weight" in message
    # params that lack a layer of the symbol
    other = save(str(tmp_path / "other"), colour_net())
    x = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="extra_fc")
    mx.sym.SoftmaxOutput(x, name="softmax").save(other + "-symbol.json")
    assert "does not match" in _error(capsys, ["--model-prefix", other, "--load-epoch", "3"] + base)
    # a symbol file that is not an MXNet symbol
    bogus = save(str(tmp_path / "bogus"), colour_net())
    with open(bogus + "-symbol.json", "w") as f:
        f.write('{"lr": 0.1}')
    assert "not an MXNet symbol" in _error(capsys, ["--model-prefix", bogus, "--load-epoch", "3"] + base)
    net = ["--model-prefix", str(fixture_dir / "net"), "--load-epoch", "3"]
    assert "does not exist" in _error(capsys, net + ["--data-val", str(tmp_path / "none.rec")])
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    assert "cannot decode" in _error(capsys, net + ["--stats", stats, "--predict", str(not_image)])
    assert "GPU" in _error(capsys, net + base + ["--gpus", "7"])


def test_runs_as_a_script(fixture_dir):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "inference", "score.py"), "--model-prefix",
         str(fixture_dir / "net"), "--load-epoch", "3", "--stats",
         str(fixture_dir / "colours_stats.json"), "--predict", str(fixture_dir / "blue.png"),
         "--top-k", "1"], capture_output=True, text=True, cwd=str(fixture_dir), timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r".*blue\.png: blue \d\.\d{4}", out.stdout.strip()), out.stdout


# ------------------------------------------------------------------ checkpoints as the trainer writes them

from mxcnn.inference import checkpoint as ckpt  # noqa: E402


def colour_params(sym):
    """The identity weights of :func:`save`, as (arg_params, aux_params) dicts."""
    args = {"conv_weight": mx.nd.array(np.eye(3).reshape(3, 3, 1, 1)), "bn_gamma": mx.nd.ones(3),
            "bn_beta": mx.nd.zeros(3), "fc1_weight": mx.nd.array(np.eye(3) * 10),
            "fc1_bias": mx.nd.zeros(3)}
    if "aux_fc_weight" in sym.list_arguments():
        args["aux_fc_weight"] = mx.nd.array(np.roll(np.eye(3), 1, axis=0) * 10)
        args["aux_fc_bias"] = mx.nd.zeros(3)
    return args, {"bn_moving_mean": mx.nd.zeros(3), "bn_moving_var": mx.nd.ones(3)}


def save_trained(prefix, sym=None, epochs=(1,), stats=None):
    """Checkpoints written by inference/checkpoint.py with the trainer's ``preprocess`` record."""
    sym = colour_net() if sym is None else sym
    args, aux = colour_params(sym)
    record = predict.preprocess_record((3, 8, 8), dict(stats or STATS, path="colours_stats.json"), 3)
    for epoch in epochs:
        ckpt.save_checkpoint(prefix, epoch, sym, args, aux, state={"preprocess": record})
    return prefix


def write_rec(path, n, rng, mislabelled=()):
    rec = mx.recordio.MXIndexedRecordIO(os.path.splitext(path)[0] + ".idx", path, "w")
    for i in range(n):
        label = i % 3
        written = (label + 1) % 3 if i in mislabelled else label
        bgr = colour_image(COLOURS[list(COLOURS)[label]], rng)[:, :, ::-1]
        rec.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(written), i, 0), bgr,
                                              img_fmt=".png"))
    rec.close()
    return path


@pytest.fixture(scope="module")
def other_set(tmp_path_factory):
    """Another test set (12 correct records) whose own stats would normalise it very differently:
    std 0.01 on blue makes every image blue, so its stats give top-1 1/3, the model's 1.0."""
    folder = tmp_path_factory.mktemp("other")
    rec = write_rec(str(folder / "other_val.rec"), 12, np.random.RandomState(5))
    own = dict(STATS, std=[1.0, 1.0, 0.01], num_val=12)
    (folder / "other_stats.json").write_text(json.dumps(own))
    return folder, rec


def test_truncated_params_names_the_intact_checkpoint(tmp_path, fixture_dir, capsys):
    prefix = save_trained(str(tmp_path / "run"), epochs=(1, 2, 3))
    with open(prefix + "-0003.params", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_params(prefix, 3)
    message = str(info.value)
    assert "Traceback" not in message and "truncated" in message
    assert "run-0003.params" in message and "run-0002.params" in message and "--load-epoch 2" in message
    rec = str(fixture_dir / "colours_val.rec")
    err = _error(capsys, ["--model-prefix", prefix, "--load-epoch", "3", "--data-val", rec])
    assert "truncated" in err and "--load-epoch 2" in err
    # every earlier one damaged too: said so
    for epoch in (1, 2):
        with open(ckpt.checkpoint_paths(prefix, epoch)["params"], "wb") as f:
            f.write(b"\0" * 10)
    assert "no earlier checkpoint" in _error(capsys, ["--model-prefix", prefix, "--load-epoch", "3",
                                                      "--data-val", rec])


def test_corrupt_training_state_names_the_file(tmp_path, fixture_dir, capsys):
    prefix = save_trained(str(tmp_path / "run"), epochs=(1,))
    with open(prefix + "-0001.json", "w") as f:
        f.write('{"epoch": 1, "preproc')
    with pytest.raises(ckpt.CheckpointError, match=r"run-0001\.json is corrupt"):
        ckpt.load_state(prefix, 1)
    err = _error(capsys, ["--model-prefix", prefix, "--load-epoch", "1", "--data-val",
                          str(fixture_dir / "colours_val.rec")])
    assert "run-0001.json is corrupt" in err


def test_cpus_counts_contexts_like_the_trainer(capsys, fixture_dir):
    assert predict.make_contexts(cpus="2") == devices.parse_devices(None, 2) == [mx.cpu(0), mx.cpu(1)]
    assert predict.make_contexts() == [mx.cpu(0)]
    net = ["--model-prefix", str(fixture_dir / "net"), "--load-epoch", "3", "--predict",
           str(fixture_dir / "red.png")]
    assert "counts CPU contexts" in _error(capsys, net + ["--cpus", "0,1"])  # the old device-id list


def test_predict_one_image_on_two_contexts(fixture_dir, capsys):
    """A batch smaller than the device count ("Too many slices")."""
    stats = str(fixture_dir / "colours_stats.json")
    p = predict.Predictor(str(fixture_dir / "net"), 3, stats=stats, contexts=[mx.cpu(0), mx.cpu(1)],
                          batch_size=1)
    assert p.predict_files([str(fixture_dir / "green.png")], top_k=1)[0][0][1] == "green"
    assert score.main(["--model-prefix", str(fixture_dir / "net"), "--load-epoch", "3", "--stats",
                       stats, "--cpus", "2", "--predict", str(fixture_dir / "red.png")]) == 0
    assert capsys.readouterr().out.startswith(str(fixture_dir / "red.png") + ": red ")


def test_checkpoint_carries_its_preprocessing(tmp_path, fixture_dir, other_set, capsys):
    prefix = save_trained(str(tmp_path / "run"))
    folder, other = other_set
    stats = str(fixture_dir / "colours_stats.json")
    # another test set, no --stats: the model's own normalisation, not the set's
    assert score.score_rec(prefix, 1, other, batch_size=5)["top-1"] == 1.0
    assert score.score_rec(prefix, 1, other, stats=str(folder / "other_stats.json"))["top-1"] == \
        pytest.approx(1 / 3.0)  # what the other set's own stats would do
    # the training stats are accepted for another test set (they lend their mean/std only)
    assert score.main(["--model-prefix", prefix, "--load-epoch", "1", "--data-val", other,
                       "--stats", stats, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top-1"] == 1.0
    # and still check their own set's files
    assert score.score_rec(prefix, 1, str(fixture_dir / "colours_val.rec"))["top-1"] == \
        pytest.approx(0.9)
    # --predict without --stats: class names and probabilities as with the training stats
    images = [str(fixture_dir / ("%s.png" % c)) for c in COLOURS]
    outputs = []
    for extra in ([], ["--stats", stats]):
        assert score.main(["--model-prefix", prefix, "--load-epoch", "1", "--json", "--predict"]
                          + images + extra) == 0
        captured = capsys.readouterr()
        assert "not normalised" not in captured.err
        outputs.append(json.loads(captured.out))
    assert outputs[0] == outputs[1]
    assert [outputs[0][p][0]["name"] for p in images] == list(COLOURS)


def test_a_test_set_with_other_classes_is_refused(tmp_path, other_set, capsys):
    prefix = save_trained(str(tmp_path / "run"))
    folder = tmp_path / "renamed"
    folder.mkdir()
    rec = write_rec(str(folder / "pets_val.rec"), 3, np.random.RandomState(1))
    (folder / "pets_stats.json").write_text(json.dumps(dict(STATS, classes=["cat", "dog", "fox"])))
    err = _error(capsys, ["--model-prefix", prefix, "--load-epoch", "1", "--data-val", rec])
    assert "names other classes" in err and "pets_stats.json" in err


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "deep-supervision"])
def test_gluon_imports_the_inference_symbol(tmp_path, fixture_dir, grouped):
    """What a Gluon user writes, equal to score.py's probabilities; -symbol.json stays the
    training symbol (mx.model.load_checkpoint)."""
    prefix = save_trained(str(tmp_path / "run"), colour_net(extra_head=grouped), epochs=(3,))
    net = mx.gluon.SymbolBlock.imports(prefix + "-inference-symbol.json", ["data"],
                                       prefix + "-0003.params")
    p = predict.Predictor(prefix, 3)
    images = np.stack([predict.preprocess_image(str(fixture_dir / ("%s.png" % c)), (3, 8, 8), p.stats)
                       for c in COLOURS])
    out = net(mx.nd.array(images))
    main = (out[0] if grouped else out).asnumpy()
    assert main.shape == (3, 3) and np.allclose(main.sum(axis=1), 1, atol=1e-5)
    assert np.abs(main - p.probabilities(images)).max() < 1e-6
    assert list(main.argmax(axis=1)) == [0, 1, 2]
    training = mx.sym.load(prefix + "-symbol.json")
    assert "softmax_label" in training.list_arguments()
    assert len(training.list_outputs()) == (2 if grouped else 1)


def test_trainer_records_preprocessing_and_the_inference_symbol(tmp_path, fixture_dir):
    """One epoch of train_cifar.py: its .json carries the stats' mean/std/classes and shape."""
    from mxcnn.train import train_cifar
    rec, prefix = str(fixture_dir / "colours_val.rec"), str(tmp_path / "r8" / "model")
    assert train_cifar.main(["--network", "resnet", "--num-layers", "8", "--data-train", rec,
                             "--data-val", rec, "--image-shape", "3,8,8", "--batch-size", "10",
                             "--num-epochs", "1", "--model-prefix", prefix, "--no-plot",
                             "--disp-batches", "100"]) == 0
    record = ckpt.load_state(prefix, 1)["preprocess"]
    assert record["mean"] == STATS["mean"] and record["std"] == STATS["std"]
    assert record["classes"] == STATS["classes"] and record["image_shape"] == [3, 8, 8]
    assert record["stats_file"] == str(fixture_dir / "colours_stats.json")
    net = mx.gluon.SymbolBlock.imports(prefix + "-inference-symbol.json", ["data"],
                                       prefix + "-0001.params")
    p = predict.Predictor(prefix, 1)
    x = np.stack([predict.preprocess_image(str(fixture_dir / "red.png"), (3, 8, 8), p.stats)] * 2)
    assert np.abs(net(mx.nd.array(x)).asnumpy() - p.probabilities(x)).max() < 1e-5


# ------------------------------------------------------------------ hostile input, one table

def _damaged_prefixes(base, fixture_dir):
    """name -> prefix of a checkpoint (epoch 1) with one damaged file."""
    out = {}
    for name in ("params_folder", "symbol_folder", "state_list"):
        out[name] = save(os.path.join(base, name), colour_net(), epoch=1)
    os.remove(out["params_folder"] + "-0001.params")
    os.mkdir(out["params_folder"] + "-0001.params")
    os.remove(out["symbol_folder"] + "-symbol.json")
    os.mkdir(out["symbol_folder"] + "-symbol.json")
    with open(out["state_list"] + "-0001.json", "w") as f:
        f.write("[1, 2]")
    return out


SCORE_BAD_INPUT = [
    # (case, argv after --model-prefix P --load-epoch 3 of the fixture net, expected fragment)
    ("data-val folder", ["--data-val", "{dir}"], "is a folder"),
    ("data-val missing", ["--data-val", "{dir}/none.rec"], "does not exist"),
    ("data-val not RecordIO", ["--data-val", "{dir}/red.png"], "RecordIO"),
    ("data-val empty", ["--data-val", "{tmp}/empty.rec"], "empty"),
    ("image folder", ["--predict", "{dir}"], "is a folder"),
    ("image missing", ["--predict", "{dir}/none.png"], "does not exist"),
    ("image truncated", ["--predict", "{tmp}/cut.png"], "cannot decode"),
    ("jpeg without its end", ["--predict", "{tmp}/cut.jpg"], "truncated"),
    ("decompression bomb", ["--predict", "{tmp}/bomb.png"], "declares 20000x20000 = 400,000,000 pixels"),
    ("image over the limit", ["--predict", "{dir}/red.png", "--max-image-pixels", "63"],
     "declares 8x8 = 64 pixels, over the limit of 63"),
    ("max-image-pixels zero", ["--predict", "{dir}/red.png", "--max-image-pixels", "0"], "at least 1"),
    ("stats folder", ["--predict", "{dir}/red.png", "--stats", "{dir}"], "Is a directory"),
    ("stats not JSON", ["--predict", "{dir}/red.png", "--stats", "{dir}/red.png"], "not valid JSON"),
    ("cpus as device ids", ["--predict", "{dir}/red.png", "--cpus", "0,1"], "counts CPU contexts"),
    ("cpus zero", ["--predict", "{dir}/red.png", "--cpus", "0"], "from 1 to"),
    ("cpus huge", ["--predict", "{dir}/red.png", "--cpus", "100000"], "from 1 to"),
    ("gpu absent", ["--predict", "{dir}/red.png", "--gpus", "7"], "GPU"),
    ("batch zero", ["--data-val", "{dir}/colours_val.rec", "--batch-size", "0"], "at least 1"),
    ("top-k zero", ["--predict", "{dir}/red.png", "--top-k", "0"], "at least 1"),
    ("resize negative", ["--predict", "{dir}/red.png", "--resize", "-3"], "at least 1"),
    ("bad image shape", ["--predict", "{dir}/red.png", "--image-shape", "3,a,8"], "C,H,W"),
    ("huge image", ["--predict", "{dir}/red.png", "--image-shape", "3,30000,30000"], "2^31"),
]
DAMAGED = [("params is a folder", "params_folder", "is a folder"),
           ("symbol is a folder", "symbol_folder", "symbol file"),
           ("state not an object", "state_list", "-0001.json is corrupt")]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, fixture_dir):
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "empty.rec").write_bytes(b"")
    (tmp / "cut.png").write_bytes((fixture_dir / "red.png").read_bytes()[:60])
    noise = np.random.RandomState(1).randint(0, 256, (64, 64, 3)).astype(np.uint8)
    jpeg = cv2.imencode(".jpg", noise)[1].tobytes()  # OpenCV would fill its missing end with grey
    (tmp / "cut.jpg").write_bytes(jpeg[:len(jpeg) * 9 // 10])
    (tmp / "bomb.png").write_bytes(bomb_png())
    return str(tmp)


def test_predict_refuses_a_bomb_with_bounded_memory(fixture_dir, hostile, tmp_path):
    """score.py --predict on a 50 KB PNG declaring 20000x20000: one line, exit 2, and a peak
    far below the 1.2 GB the decoded image would take."""
    status, stderr, peak = run_with_peak_memory(
        "mxcnn.inference.score", ["--model-prefix", str(fixture_dir / "net"), "--load-epoch", "3", "--stats",
                                  str(fixture_dir / "colours_stats.json"), "--predict",
                                  os.path.join(hostile, "bomb.png")], tmp_path)
    decoded = 3 * 20000 ** 2
    assert peak < decoded / 3, "peak %.0f MB for a %.0f MB image" % (peak / 2 ** 20, decoded / 2 ** 20)
    message = [line for line in stderr.splitlines() if line.startswith("score.py")]
    assert status == 2 and len(message) == 1, message
    assert "bomb.png" in message[0] and "--max-image-pixels" in message[0]


def test_predict_reads_cmyk_palette_alpha_and_grey_images(fixture_dir, tmp_path):
    from PIL import Image
    red = Image.open(fixture_dir / "red.png").convert("RGB")
    paths = []
    for name, image in (("cmyk.jpg", red.convert("CMYK")), ("palette.png", red.convert("P")),
                        ("alpha.png", red.convert("RGBA")), ("grey.png", red.convert("L"))):
        image.save(tmp_path / name, quality=100)
        paths.append(str(tmp_path / name))
    p = predict.Predictor(str(fixture_dir / "net"), 3, stats=str(fixture_dir / "colours_stats.json"))
    results = p.predict_files(paths, top_k=1)
    assert [r[0][1] for r in results[:3]] == ["red"] * 3
    grey = predict.preprocess_image(paths[3], (3, 8, 8), p.stats)
    assert grey.shape == (3, 8, 8) and np.array_equal(grey[0], grey[1])  # grey as three equal planes


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, fixture_dir):
    return _damaged_prefixes(str(tmp_path_factory.mktemp("damaged")), fixture_dir)


@pytest.mark.parametrize("case,argv,expected", SCORE_BAD_INPUT, ids=[c[0] for c in SCORE_BAD_INPUT])
def test_score_bad_input_table(fixture_dir, hostile, capsys, case, argv, expected):
    argv = [a.format(dir=str(fixture_dir), tmp=hostile) for a in argv]
    err = _error(capsys, ["--model-prefix", str(fixture_dir / "net"), "--load-epoch", "3"] + argv)
    assert expected in err, (case, err)


@pytest.mark.parametrize("case,name,expected", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_score_damaged_checkpoint_table(fixture_dir, damaged, capsys, case, name, expected):
    err = _error(capsys, ["--model-prefix", damaged[name], "--load-epoch", "1",
                          "--data-val", str(fixture_dir / "colours_val.rec")])
    assert expected in err, (case, err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_image(fixture_dir, tmp_path, capsys):
    image = tmp_path / "locked.png"
    image.write_bytes((fixture_dir / "red.png").read_bytes())
    image.chmod(0)
    assert "Permission denied" in _error(capsys, ["--model-prefix", str(fixture_dir / "net"),
                                                  "--load-epoch", "3", "--predict", str(image)])


def test_huge_batches(fixture_dir, monkeypatch, capsys):
    """A batch larger than the data is capped at the record count; one that cannot fit in
    memory is refused before MXNet allocates it."""
    base = ["--model-prefix", str(fixture_dir / "net"), "--load-epoch", "3", "--stats",
            str(fixture_dir / "colours_stats.json"), "--data-val", str(fixture_dir / "colours_val.rec")]
    assert score.main(base + ["--batch-size", "3000000000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 30
    monkeypatch.setattr(predict, "_available_bytes", lambda: 2 ** 10)
    assert "memory is available" in _error(capsys, base + ["--batch-size", "30"])
