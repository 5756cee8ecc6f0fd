"""inference/quantize.py as a command, and the int8 checkpoint through score.py and --predict;
score.py's --dtype and thread defaults."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.data import stats as data_stats
from mxcnn.graph import precision
from mxcnn.inference import checkpoint, predict, score
from tests.inference import int8_helpers
from tests.train.cli_helpers import SIDE, make_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUANTIZE = os.path.join(ROOT, "inference", "quantize.py")
SCORE = os.path.join(ROOT, "inference", "score.py")


def _run(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, script] + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A PreAct-8 checkpoint (the fusion guard's pattern) on tiny records, and the records."""
    import mxnet as mx

    folder = tmp_path_factory.mktemp("quantize")
    train, val = make_records(str(folder / "data"))
    stats = data_stats.load_stats(data_stats.stats_files_beside(train)[0])
    shape = (3, SIDE, SIDE)
    sym = symbols.get_symbol("preact_resnet", num_classes=4, num_layers=8, image_shape=shape)
    args, auxs = int8_helpers.random_params(sym, shape)
    images = mx.nd.array(int8_helpers.smooth_images(16, shape, 1))
    auxs = int8_helpers.set_bn_statistics(sym, args, auxs, images)
    prefix = str(folder / "m")
    checkpoint.save_checkpoint(
        prefix, 2, sym, args, auxs, state={"preprocess": predict.preprocess_record(shape, stats, 4)}
    )
    return prefix, train, val


def _quantize(prefix, train, batches, *extra):
    """inference/quantize.py on epoch 2 of ``prefix``, calibrated on ``batches`` batches of ``train``."""
    return _run(QUANTIZE, "--model-prefix", prefix, "--load-epoch", 2, "--calib-data", train,
                "--num-calib-batches", batches, *extra)


def test_quantize_writes_an_int8_checkpoint_that_scores_and_predicts(model, tmp_path):
    prefix, train, val = model
    out = _quantize(prefix, train, 2, "--calib-batch-size", 16)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "naive calibration on 32 images" in out.stdout
    state = checkpoint.load_state(prefix + "-int8", 2)
    assert state["preprocess"] == checkpoint.load_state(prefix, 2)["preprocess"]
    assert state["quantization"]["fusion_cuts"] == ["stem_conv"]
    assert checkpoint.damage(prefix + "-int8", 2) is None
    scores = {}
    for name in (prefix, prefix + "-int8"):
        result = _run(SCORE, "--model-prefix", name, "--load-epoch", 2, "--data-val", val, "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        scores[name] = json.loads(result.stdout)
    assert scores[prefix]["samples"] == scores[prefix + "-int8"]["samples"] == 32
    assert abs(scores[prefix]["top-1"] - scores[prefix + "-int8"]["top-1"]) <= 0.25
    image = str(tmp_path / "a.png")
    cv2.imwrite(image, (np.random.RandomState(0).rand(SIDE, SIDE, 3) * 255).astype(np.uint8))
    result = _run(SCORE, "--model-prefix", prefix + "-int8", "--load-epoch", 2, "--predict", image)
    assert result.returncode == 0 and result.stdout.startswith(image + ": c"), result.stderr[-2000:]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--exclude", "no_such_layer"], "--exclude no_such_layer: no such layer"),
        (["--calib-data", "missing.rec"], "calibration file missing.rec does not exist"),
        (["--num-calib-batches", "0"], "must be at least 1"),
    ],
)
def test_quantize_refuses_bad_input_in_one_line(model, extra, message):
    prefix, train, _ = model
    args = ["--model-prefix", prefix, "--load-epoch", 2, "--calib-data", train] + extra
    out = _run(QUANTIZE, *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_int8_checkpoint_refuses_another_dtype(model):
    prefix, train, val = model
    if not os.path.exists(prefix + "-int8-symbol.json"):
        assert _quantize(prefix, train, 1).returncode == 0
    out = _run(
        SCORE, "--model-prefix", prefix + "-int8", "--load-epoch", 2, "--data-val", val, "--dtype", "bfloat16"
    )
    assert out.returncode == 2 and "int8 checkpoint runs as it is" in out.stderr


@pytest.mark.skipif("avx512_bf16" not in precision.cpu_flags(), reason="needs avx512_bf16")
def test_bfloat16_scoring_agrees_with_float32(model):
    prefix, _, val = model
    results = [
        json.loads(
            _run(
                SCORE, "--model-prefix", prefix, "--load-epoch", 2, "--data-val", val, "--json", *extra
            ).stdout
        )
        for extra in ([], ["--dtype", "bfloat16"])
    ]
    assert abs(results[0]["top-1"] - results[1]["top-1"]) <= 0.1


@pytest.mark.parametrize(
    "argv, environ, threads",
    [
        (["--batch-size", "1"], {}, None),
        (["--predict", "a.png", "--top-k", "3"], {}, None),
        (["--batch-size", "1"], {"OMP_NUM_THREADS": "2"}, "2"),
        (["--batch-size=1", "--threads", "2"], {}, "2"),
        (["--threads=1"], {"OMP_NUM_THREADS": "2"}, "1"),
    ],
)
def test_threads_flag_wins_else_the_default(argv, environ, threads):
    environ = dict(environ)
    score.thread_defaults(argv, environ)
    assert environ.get("OMP_NUM_THREADS") == threads
