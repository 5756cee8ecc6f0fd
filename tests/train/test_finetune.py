"""Fine-tuning (train/finetune.py): which parameters --freeze fixes, frozen BatchNorms in
inference mode on both engines, and --pretrained / --resume through the command line."""

import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from mxcnn import symbols
from mxcnn.graph.training import training_graph
from mxcnn.train import engines, finetune
from mxcnn.train.options import UsageError
from tests.train.cli_helpers import ROOT, SCRIPT, SIDE, base_args, env, load, make_records, run_cli

SHAPE = (3, SIDE, SIDE)


@pytest.fixture(scope="module")
def resnet8():
    return symbols.get_symbol("resnet", num_classes=4, num_layers=8, image_shape=SHAPE)


def test_classifier_and_freeze_specs(resnet8):
    assert finetune.classifier_params(resnet8) == ["fc1_bias", "fc1_weight"]
    names = [n for n in resnet8.list_arguments() if n not in ("data", "softmax_label")]
    up_to_2 = finetune.frozen_params(resnet8, "stage2")
    assert {n.split("_")[0] for n in up_to_2} == {"stem", "stage1", "stage2"}
    assert not any(n.startswith(("stage3", "fc1", "post")) for n in up_to_2)
    assert finetune.frozen_params(resnet8, "backbone") == sorted(n for n in names if not n.startswith("fc1"))
    assert finetune.frozen_params(resnet8, "stem_*,*_b_bn_*") == sorted(
        n for n in names if n.startswith("stem_") or "_b_bn_" in n
    )
    for spec, message in (
        ("stage9", "matches no parameter"),
        ("nothing_*", "matches no parameter"),
        ("*", "fixes every parameter"),
    ):
        with pytest.raises(UsageError, match=message):
            finetune.frozen_params(resnet8, spec)
    assert finetune.parse_pretrained("runs/a:b/model:12") == ("runs/a:b/model", 12)
    assert finetune.parse_pretrained("runs/model") == ("runs/model", None)


@pytest.mark.parametrize("engine", ["module", "gluon"])
def test_frozen_stages_keep_weights_and_batchnorm_statistics(resnet8, engine):
    frozen = finetune.frozen_params(resnet8, "stage1")
    sym, count = finetune.frozen_symbol(resnet8, frozen)
    assert count == 3  # the stem's BatchNorm and stage 1's two
    attrs = sym.attr_dict()
    assert attrs["stage1_unit1_a_bn"]["use_global_stats"] == "True"
    assert "use_global_stats" not in attrs["stage2_unit1_a_bn"]
    data_shape = (8,) + SHAPE
    mx.random.seed(0)
    arg, aux = engines.initial_params(resnet8, data_shape)
    rs = np.random.RandomState(0)
    aux = {k: mx.nd.array(rs.uniform(0.5, 1.5, v.shape)) for k, v in aux.items()}
    ctx = [mx.cpu()]
    runner = engines.make_engine(
        engine,
        training_graph(sym, ctx, data_shape),
        ctx,
        data_shape,
        (8,),
        arg,
        aux,
        "sgd",
        {"learning_rate": 0.5, "momentum": 0.9},
        fixed_params=frozen,
    )
    data = mx.nd.array(rs.randn(*data_shape) * 3 + 1)
    for _ in range(2):
        runner.step(data, mx.nd.array(np.arange(8) % 4))
    new_arg, new_aux = runner.get_params()
    for name in frozen:
        assert np.array_equal(new_arg[name].asnumpy(), arg[name].asnumpy()), name
    for name in ("stem_bn_moving_mean", "stage1_unit1_b_bn_moving_var"):
        assert np.array_equal(new_aux[name].asnumpy(), aux[name].asnumpy()), name
    for name in ("stage2_unit1_a_bn_moving_mean", "stage3_unit1_b_bn_moving_var"):
        assert not np.allclose(new_aux[name].asnumpy(), aux[name].asnumpy()), name
    assert not np.allclose(
        new_arg["stage2_unit1_a_conv_weight"].asnumpy(), arg["stage2_unit1_a_conv_weight"].asnumpy()
    )


def _train(records, prefix, *extra):
    done = run_cli(base_args(records, prefix, "--num-epochs", "1", *extra))
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def pretrained(records, tmp_path_factory):
    """A 1-epoch checkpoint on the 4-class records: ``prefix`` of runs/…/m-0001."""
    prefix = str(tmp_path_factory.mktemp("pretrained") / "m")
    _train(records, prefix)
    return prefix


def test_finetune_on_other_classes(pretrained, tmp_path):
    records = make_records(str(tmp_path / "three"), name="three", classes=3)
    prefix = str(tmp_path / "ft" / "m")
    done = _train(
        records, prefix, "--pretrained", pretrained + ":1", "--freeze", "stage1", "--backbone-lr-mult", "0.1"
    )
    assert "re-initialised (other shape or classes): fc1_weight (4, 64) -> (3, 64)" in done.stderr
    assert "--freeze stage1: " in done.stderr and "--backbone-lr-mult 0.1" in done.stderr
    before, after = load(pretrained, 1), load(prefix, 1)
    frozen = [k for k in before if k.startswith(("arg:stem_", "arg:stage1_", "aux:stem_", "aux:stage1_"))]
    assert len(frozen) > 10
    for key in frozen:
        assert np.array_equal(before[key].asnumpy(), after[key].asnumpy()), key
    assert not np.allclose(
        before["arg:stage3_unit1_a_conv_weight"].asnumpy(), after["arg:stage3_unit1_a_conv_weight"].asnumpy()
    )
    assert after["arg:fc1_weight"].shape == (3, 64)
    state = json.load(open(prefix + "-0001.json"))
    assert state["finetune"]["freeze"] == "stage1" and state["finetune"]["backbone_lr_mult"] == 0.1


def test_a_checkpoint_that_fits_nothing_gets_one_line(pretrained, records, tmp_path):
    args = base_args(records, str(tmp_path / "dn" / "m"), "--pretrained", pretrained)
    args[args.index("resnet")] = "densenet"
    args[args.index("8", args.index("--num-layers"))] = "40"
    done = run_cli(args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "fits nothing of this network (densenet-40)" in lines[0], done.stderr
    done = run_cli(
        base_args(records, str(tmp_path / "x" / "m"), "--pretrained", str(tmp_path / "missing" / "m"))
    )
    assert done.returncode == 2 and "--pretrained" in done.stderr, done.stderr


def test_resume_of_a_finetuned_run_is_exact(pretrained, records, tmp_path):
    extra = [
        "--pretrained",
        pretrained,
        "--freeze",
        "stage2",
        "--backbone-lr-mult",
        "0.2",
        "--deterministic",
        "1",
        "--seed",
        "5",
    ]
    straight, resumed = str(tmp_path / "straight" / "m"), str(tmp_path / "resumed" / "m")
    procs = [
        subprocess.Popen(
            [sys.executable, SCRIPT] + base_args(records, p, *extra, *more),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=ROOT,
        )
        for p, more in ((straight, ["--num-epochs", "2"]), (resumed, ["--num-epochs", "1"]))
    ]
    for proc in procs:
        assert proc.wait(timeout=240) == 0, proc.stderr.read()
    wrong = run_cli(base_args(records, resumed, *extra[:4], "--num-epochs", "2", "--resume"))
    assert wrong.returncode == 2 and "trained with --backbone-lr-mult 0.2" in wrong.stderr
    done = run_cli(base_args(records, resumed, *extra, "--num-epochs", "2", "--resume"))
    assert done.returncode == 0, done.stderr
    assert "--pretrained is not read again" in done.stderr
    a, b = load(straight, 2), load(resumed, 2)
    assert set(a) == set(b)
    for key in a:
        assert np.array_equal(a[key].asnumpy(), b[key].asnumpy()), key
    assert os.path.exists(resumed + "-0002.json")
