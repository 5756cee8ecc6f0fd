"""train/train_cifar.py as users run it: bad input, end-to-end training, kill -9 + resume, presets."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from tests.train.cli_helpers import (  # noqa: F401
    CLASSES,
    PLOT,
    ROOT,
    SCRIPT,
    SIDE,
    base_args,
    env,
    load,
    make_records,
    run_cli,
)

BAD_INPUT = [
    # (case, args, expected message fragment)
    ("unknown network", ["--network", "resnett"], "unknown network 'resnett'"),
    ("bad depth", ["--num-layers", "7"], "num_layers"),
    ("missing rec", ["--data-train", "/nonexistent/x_train.rec"], "does not exist"),
    ("unreadable rec", ["--data-train", "{garbage}"], "not a RecordIO file"),
    ("class count vs stats", ["--num-classes", "10"], "disagrees with the data"),
    ("malformed gpus", ["--gpus", "0,x"], "--gpus '0,x' is malformed"),
    ("batch vs devices", ["--cpus", "3"], "not divisible by the 3 devices"),
    ("missing checkpoint", ["--load-epoch", "5"], "no checkpoint for --load-epoch 5"),
    ("nothing to resume", ["--resume"], "--resume: no complete checkpoint"),
    ("bad net option", ["--net-option", "widen_factor=2"], "does not take option(s) widen_factor"),
    ("memonger with gluon", ["--memonger", "1", "--engine", "gluon"], "--memonger needs --engine module"),
    ("dist without launcher", ["--kv-store", "dist_sync"], "needs the DMLC_* environment"),
    ("checkpoint of another net", ["--load-epoch", "1", "--model-prefix", "{other}"], "does not fit"),
]


def test_bad_input_fails_fast_with_one_line(records, tmp_path):
    garbage = tmp_path / "garbage_train.rec"
    garbage.write_bytes(b"this is not a record file")
    # a checkpoint of a 2-class resnet-8: same names, other fc shape
    from mxcnn import symbols
    from mxcnn.inference import checkpoint
    from mxcnn.train import fit
    other_sym = symbols.get_symbol("resnet", 2, 8, (3, SIDE, SIDE))
    arg, aux = fit.initial_params(other_sym, (2, 3, SIDE, SIDE))
    other = str(tmp_path / "other" / "m")
    checkpoint.save_checkpoint(other, 1, other_sym, arg, aux)
    env_vars = env()
    env_vars.pop("DMLC_PS_ROOT_URI", None)
    procs = []
    for _case, extra, _ in BAD_INPUT:  # all at once: each only imports mxnet and checks
        extra = [str(garbage) if a == "{garbage}" else other if a == "{other}" else a for a in extra]
        args = base_args(records, str(tmp_path / "none" / "m")) + extra
        procs.append(subprocess.Popen([sys.executable, SCRIPT] + args, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env_vars, cwd=ROOT))
    for (case, _, fragment), proc in zip(BAD_INPUT, procs):
        out, err = proc.communicate(timeout=120)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
        assert proc.returncode == 2, (case, err)
        assert "Traceback" not in err, case
        assert len(lines) == 1 and lines[0].startswith("train_cifar.py: error: "), (case, err)
        assert fragment in lines[0], (case, lines[0])
        assert "Epoch[" not in err, case  # failed before training
    assert not (tmp_path / "none").exists()


def test_kill9_then_resume_matches_uninterrupted_run(records, tmp_path):
    extra = ["--num-epochs", "4", "--deterministic", "1", "--label-smoothing", "0.1",
             "--mixup-alpha", "0.2", "--seed", "3"]
    straight = str(tmp_path / "straight" / "m")
    killed = str(tmp_path / "killed" / "m")
    proc = subprocess.Popen([sys.executable, SCRIPT] + base_args(records, killed, *extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), cwd=ROOT)
    deadline = time.time() + 240
    while not os.path.exists(killed + "-0001.json") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not os.path.exists(killed + "-0004.json")
    # the uninterrupted run and the resumed one side by side
    procs = [subprocess.Popen([sys.executable, SCRIPT] + base_args(records, prefix, *extra, *more),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                              cwd=ROOT)
             for prefix, more in ((straight, []), (killed, ["--resume"]))]
    (_, straight_err), (_, resumed_err) = [p.communicate(timeout=240) for p in procs]
    assert procs[0].returncode == 0, straight_err
    assert procs[1].returncode == 0, resumed_err
    assert re.search(r"resuming from .*m-000[123]\.params", resumed_err)
    a, b = load(straight, 4), load(killed, 4)
    assert set(a) == set(b)
    for key in a:
        assert np.array_equal(a[key].asnumpy(), b[key].asnumpy()), key
    log = [json.loads(line) for line in open(killed + "-log.jsonl")]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    # MXNet's log format (tools/parse_log.py regexes)
    text = straight_err
    assert re.search(r"Epoch\[0\] Batch \[0-2\]\tSpeed: [\d.]+ samples/sec\taccuracy=[\d.]+", text)
    for pattern in (r"Epoch\[3\] Train-accuracy=([.\d]+)", r"Epoch\[3\] Validation-accuracy=([.\d]+)",
                    r"Epoch\[3\] Time cost=([.\d]+)"):
        assert re.search(pattern, text), pattern
    state = json.load(open(straight + "-0004.json"))
    assert state["epoch"] == 4 and state["num_update"] == 4 * 6


def test_gluon_multi_device_checkpoint_continues_in_module(records, tmp_path):
    prefix = str(tmp_path / "run" / "m")
    first = run_cli(base_args(records, prefix, "--engine", "gluon", "--cpus", "2", "--num-epochs", "1"))
    assert first.returncode == 0, first.stderr
    assert os.path.exists(prefix + "-0001.states")
    second = run_cli(base_args(records, prefix, "--engine", "module", "--load-epoch", "1",
                               "--num-epochs", "2", "--memonger", "1") + ["--lr-step-epochs", ""],
                     MXCNN_CACHE_DIR=str(tmp_path / "cache"))
    assert second.returncode == 0, second.stderr
    # the .states are by parameter name on the CPU: they cross engines and device counts
    assert "optimizer state restored from %s-0001.states" % prefix in second.stderr
    assert "onto 1 device(s)" in second.stderr and "NOT restored" not in second.stderr
    assert "memonger: planned mirroring for per-device batch 16" in second.stderr
    assert "Epoch[1] Validation-accuracy" in second.stderr and "Epoch[0]" not in second.stderr
    log = [json.loads(line) for line in open(prefix + "-log.jsonl")]
    assert [r["epoch"] for r in log] == [1, 2]
    plot = run_cli([prefix, prefix + "-log.jsonl", "--labels", "a,b", "-o", str(tmp_path / "c.png")],
                   script=PLOT)
    assert plot.returncode == 0, plot.stderr
    assert open(tmp_path / "c.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_dist_sync_two_workers_through_the_launcher(records, tmp_path):
    prefix = str(tmp_path / "dist" / "m")
    out = run_cli(["-n", "2", "-s", "1", "--timeout", "200", "--", sys.executable, SCRIPT]
                  + base_args(records, prefix, "--kv-store", "dist_sync", "--num-epochs", "1"),
                  script=os.path.join(ROOT, "distributed", "launch.py"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert text.count("Epoch[0] Train-accuracy") == 2  # both workers trained
    # validation is sharded and its sums are added over the workers: one global figure, the
    # same on both (their shards and BatchNorm statistics differ, so unsummed they would not)
    for metric in ("accuracy", "cross-entropy"):
        seen = re.findall(r"\[worker \d\].*Epoch\[0\] Validation-%s=([\d.]+)" % metric, text)
        assert len(seen) == 2 and seen[0] == seen[1], (metric, seen)
    # every worker keeps a full copy (rank 1 under PREFIX-1, as MXNet's fit.py): hosts
    # without a shared filesystem can each resume
    assert text.count("Saved checkpoint") == 2
    state = json.load(open(prefix + "-0001.json"))
    # 96 images, 2 shards of 48, batch 16 per worker -> 3 synchronous updates
    assert state["num_workers"] == 2 and state["num_update"] == 3 and state["kvstore"] == "dist_sync"
    for copy in (prefix, prefix + "-1"):
        assert os.path.exists(copy + "-0001.states")  # workers update locally: states are saved
    import mxnet as mx
    mine, other = mx.nd.load(prefix + "-0001.params"), mx.nd.load(prefix + "-1-0001.params")
    for name in (k for k in mine if k.startswith("arg:")):  # the same weights in both copies
        assert (mine[name] == other[name]).min().asscalar() == 1, name
    # a host without rank 0's files: all of them gone, the job resumes from the rank-1 copy
    for path in glob.glob(prefix + "-0001.*"):
        os.remove(path)
    out = run_cli(["-n", "2", "-s", "1", "--timeout", "200", "--", sys.executable, SCRIPT]
                  + base_args(records, prefix, "--kv-store", "dist_sync", "--num-epochs", "2",
                              "--resume"),
                  script=os.path.join(ROOT, "distributed", "launch.py"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert text.count("resuming from %s-1-0001.params" % prefix) == 2, text[-3000:]
    assert "optimizer state restored from %s-1-0001.states" % prefix in text
    assert os.path.exists(prefix + "-0002.params") and os.path.exists(prefix + "-1-0002.params")


def test_benchmark_mode_prints_speed(tmp_path):
    out = run_cli(["--benchmark", "1", "--network", "resnet", "--num-layers", "8", "--image-shape",
                   "3,16,16", "--batch-size", "8", "--num-batches", "3", "--num-epochs", "1",
                   "--disp-batches", "1", "--model-prefix", str(tmp_path / "b")])
    assert out.returncode == 0, out.stderr
    assert re.search(r"benchmark: module engine, 1 device\(s\), batch 8: [\d.]+ img/s", out.stderr)
    assert re.search(r"oneDNN: \d+ BatchNorm\+ReLU pairs fused", out.stderr)
    assert not os.listdir(tmp_path)  # benchmark writes nothing


def test_no_fusion_trains_the_graph_as_built(tmp_path):
    out = run_cli(["--benchmark", "1", "--network", "resnet", "--num-layers", "8", "--image-shape",
                   "3,16,16", "--batch-size", "8", "--num-batches", "2", "--num-epochs", "1",
                   "--no-fusion", "--model-prefix", str(tmp_path / "b")])
    assert out.returncode == 0, out.stderr
    assert "benchmark: module engine" in out.stderr
    assert "pairs fused" not in out.stderr


def test_presets_fill_only_flags_not_given():
    from mxcnn.train import presets, train_cifar
    argv = ["--preset", "wrn", "--wd", "1e-3", "--num-layers", "16"]
    args = train_cifar.apply_preset(train_cifar.build_parser().parse_args(argv),
                                    train_cifar.explicit_flags(argv))
    assert args.wd == 1e-3 and args.num_layers == 16  # explicit wins
    assert args.optimizer == "nag" and args.lr_step_epochs == "60,120,160" and args.lr_factor == 0.2
    assert args.dropout == 0.3 and args.num_epochs == 200 and args.network == "wrn"
    args = train_cifar.apply_preset(train_cifar.build_parser().parse_args(["--preset", "resnet110"]),
                                    train_cifar.explicit_flags(["--preset", "resnet110"]))
    assert (args.warmup_iters, args.warmup_lr, args.warmup_mode) == (400, 0.01, "constant")
    for name, preset in presets.PRESETS.items():
        assert preset["source"] and set(preset["values"]) <= set(vars(args)), name


def test_fast92_preset_is_airbench95_in_mxnet_terms():
    """Widths 128/384/384, 15 epochs, airbench95's lr 10 per 1024 examples (11.5 in the fast
    preset's 1.5), the same decoupled decay per step, and the schedule kept in proportion."""
    from mxcnn import symbols
    from mxcnn.train import options, train_cifar
    argv = ["--preset", "fast92"]
    args = train_cifar.apply_preset(train_cifar.build_parser().parse_args(argv),
                                    train_cifar.explicit_flags(argv))
    fast = train_cifar.apply_preset(train_cifar.build_parser().parse_args(["--preset", "fast"]),
                                    train_cifar.explicit_flags(["--preset", "fast"]))
    assert options.network_options(args) == {"widths": (128, 384, 384)}
    assert args.num_epochs == 15 and abs(args.lr / fast.lr - 10.0 / 11.5) < 1e-4
    assert abs(args.lr * args.wd / (fast.lr * fast.wd) - 1) < 1e-4    # 0.0153 per 1024 examples
    assert abs(args.warmup_epochs / args.num_epochs - fast.warmup_epochs / fast.num_epochs) < 1e-9
    assert abs(args.final_lr / args.lr - 0.07) < 1e-9 and abs(args.warmup_lr / args.lr - 0.2) < 1e-9
    for key in ("network", "optimizer", "batch_size", "mom", "label_smoothing", "flip", "tta",
                "lookahead_every", "bn_bias_lr_mult", "crop_pad", "dtype"):
        assert getattr(args, key) == getattr(fast, key), key
    sym = symbols.get_symbol("airbench", num_classes=10, **options.network_options(args))
    convs = [(24, 128), (128, 128), (128, 384), (384, 384), (384, 384), (384, 384)]
    expected = 24 * 3 * 4 + 24 + sum(9 * a * b + 2 * b for a, b in convs) + 384 * 10
    assert symbols.count_params(sym, (3, 32, 32)) == expected
