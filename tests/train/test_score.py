"""train/score.py and train/predict.py on checkpoints made here with Module.save_checkpoint."""
import json
import os
import re
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

import symbols
from train import predict, score

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
        [sys.executable, os.path.join(ROOT, "train", "score.py"), "--model-prefix",
         str(fixture_dir / "net"), "--load-epoch", "3", "--stats",
         str(fixture_dir / "colours_stats.json"), "--predict", str(fixture_dir / "blue.png"),
         "--top-k", "1"], capture_output=True, text=True, cwd=str(fixture_dir), timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r".*blue\.png: blue \d\.\d{4}", out.stdout.strip()), out.stdout
