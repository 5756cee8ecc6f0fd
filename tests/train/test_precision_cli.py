"""train_cifar.py --dtype: a dtype the device cannot run is one line and exit 2; bfloat16
training writes float32 checkpoints that a float32 run continues from."""
import json
import os

import numpy as np
import pytest

from mxcnn.graph import fusion, precision  # noqa: E402
from tests.train.cli_helpers import base_args, run_cli

HAS_BF16 = "avx512_bf16" in precision.cpu_flags() and fusion.available()


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_float16_on_cpu_exits_2_with_one_line(records, tmp_path):
    line = _one_line_error(run_cli(base_args(records, str(tmp_path / "m"), "--dtype", "float16")))
    assert line.startswith("train_cifar.py: error: --dtype float16 is for NVIDIA GPUs")
    assert "--gpus" in line
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.skipif(HAS_BF16, reason="this CPU has avx512_bf16")
def test_bfloat16_without_the_cpu_flag_exits_2_with_one_line(records, tmp_path):
    line = _one_line_error(run_cli(base_args(records, str(tmp_path / "m"), "--dtype", "bfloat16")))
    assert "avx512_bf16" in line and "--dtype float32" in line


@pytest.mark.skipif(not HAS_BF16, reason="needs a CPU with avx512_bf16 and oneDNN")
def test_bfloat16_run_saves_float32_checkpoints_a_float32_run_continues(records, tmp_path):
    import mxnet as mx

    from mxcnn import symbols
    prefix = str(tmp_path / "m")
    proc = run_cli(base_args(records, prefix, "--dtype", "bfloat16", "--num-epochs", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bfloat16: " in proc.stderr and "convolutions in bfloat16" in proc.stderr
    params = mx.nd.load(prefix + "-0001.params")
    assert params and {value.dtype for value in params.values()} == {np.float32}
    saved = mx.sym.load(prefix + "-symbol.json")
    assert precision.cast_count(saved) == 0
    plain = symbols.get_symbol("resnet", num_classes=4, num_layers=8, image_shape=(3, 16, 16))
    assert saved.tojson() == plain.tojson()
    with open(prefix + "-0001.json") as handle:
        assert json.load(handle)["dtype"] == "bfloat16"
    proc = run_cli(base_args(records, prefix, "--load-epoch", "1", "--num-epochs", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {v.dtype for v in mx.nd.load(prefix + "-0002.params").values()} == {np.float32}


def test_auto_dtype_says_what_it_chose_and_records_it(records, tmp_path):
    """--dtype auto trains in what graph.precision.resolve_dtype picks for this machine (the
    fast preset's default), names the choice in the log, and records it in the checkpoint."""
    import mxnet as mx
    chosen, why = precision.resolve_dtype("auto", [mx.cpu()])
    prefix = str(tmp_path / "m")
    proc = run_cli(base_args(records, prefix, "--dtype", "auto", "--num-epochs", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--dtype auto: %s (%s)" % (chosen, why) in proc.stderr
    with open(prefix + "-0001.json") as handle:
        assert json.load(handle)["dtype"] == chosen
