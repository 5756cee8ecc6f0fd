"""bench/gpu_smoke.py without a GPU: one line and exit 2; with a faked nvidia-smi, its plan.

Nothing is installed or trained here (the plan is printed with --dry-run).
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "bench", "gpu_smoke.py")


def _run(tmp_path, *args, fake=None):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if fake is not None:
        (bindir / "nvidia-smi").write_text(fake)
        (bindir / "nvidia-smi").chmod(0o755)
    # PATH with no real nvidia-smi (even on a GPU host): only the fake one, if any
    path = str(bindir)
    return subprocess.run([sys.executable, SMOKE, "--venv", str(tmp_path / "venv")] + list(args),
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PATH=path))


def test_no_gpu_exits_2_with_one_line(tmp_path):
    out = _run(tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no NVIDIA GPU" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "venv").exists()  # nothing was installed


def test_failing_driver_counts_as_no_gpu(tmp_path):
    out = _run(tmp_path, fake="#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't "
                              "communicate with the NVIDIA driver\"\nexit 9\n")
    assert out.returncode == 2 and "no NVIDIA GPU" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_plan_on_a_two_gpu_host(tmp_path):
    fake = ("#!/bin/sh\ncase \"$*\" in *name*) echo 'Tesla V100'; echo 'Tesla V100';;\n"
            "*) echo 535.104.05; echo 535.104.05;; esac\n")
    out = _run(tmp_path, "--dry-run", fake=fake)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "GPU(s): 2, driver 535.104.05 -> mxnet-cu117" in text
    assert "mxnet_build.py install --mxnet mxnet-cu117" in text
    for gpus in ("--gpus 0 ", "--gpus 0,1 "):
        assert gpus in text
    assert "--dtype float16" in text and "--resume" in text and "--deterministic 1" in text
    assert "train_cifar10.py --benchmark 1" in text  # MXNet's own example, same settings
    assert not (tmp_path / "venv").exists()


def test_make_tree_gives_a_preparable_data_set(tmp_path):
    sys.path.insert(0, ROOT)
    from bench import gpu_smoke
    from mxcnn.data.prepare_cifar import prepare
    gpu_smoke.make_tree(str(tmp_path / "tree"), classes=10, train=2, test=1)
    stats = prepare("cifar10", source=str(tmp_path / "tree"), output_dir=str(tmp_path / "out"),
                    name="smoke", quiet=True, log=lambda m: None)
    assert stats["num_classes"] == 10 and stats["num_train"] == 20 and stats["num_val"] == 10
