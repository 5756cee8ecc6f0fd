"""common/mxnet_build.py + scripts/mxnet_build.py: one MXNet build per machine, never two."""
import os
import subprocess
import sys
import types

import pytest

from mxcnn.common import mxnet_build

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "mxnet_build.py")


@pytest.mark.parametrize("driver, package", [
    ("535.104.05", "mxnet-cu117"),   # a CUDA 12 driver runs every 11.x build
    ("515.43.04", "mxnet-cu117"),
    ("510.47.03", "mxnet-cu116"),
    ("470.82.01", "mxnet-cu114"),
    ("460.27.03", "mxnet-cu112"),
    ("450.80.02", "mxnet-cu110"),
    ("440.33.01", "mxnet-cu102"),
    ("418.39", "mxnet-cu101"),
])
def test_driver_picks_the_newest_fully_compatible_build(driver, package):
    chosen, reason = mxnet_build.choose("auto", (driver, 2))
    assert chosen == package
    assert driver in reason and "2 NVIDIA GPU(s)" in reason


def test_minor_version_compatibility_is_mentioned_not_chosen():
    _, reason = mxnet_build.choose(None, ("470.82.01", 1))
    assert "minor version compatibility" in reason and "mxnet-cu117" in reason
    _, reason = mxnet_build.choose(None, ("440.33.01", 1))  # CUDA 10.2 driver: no 11.x at all
    assert "minor version" not in reason


def test_no_gpu_means_cpu_and_names_are_normalised():
    assert mxnet_build.choose("auto", None)[0] == "mxnet"
    assert mxnet_build.choose("cpu", ("535.104.05", 1))[0] == "mxnet"  # the user's word wins
    for name in ("cu117", "mxnet-cu117", "MXNET_CU117"):
        assert mxnet_build.choose(name, None) == ("mxnet-cu117", "requested")


def test_bad_name_and_old_driver_are_user_errors():
    with pytest.raises(mxnet_build.BuildError, match="unknown MXNet build 'cu118'.*cu117"):
        mxnet_build.choose("cu118")
    with pytest.raises(mxnet_build.BuildError, match="older than 418.39"):
        mxnet_build.choose("auto", ("410.48", 1))
    assert issubclass(mxnet_build.BuildError, ValueError)


def test_nvidia_smi_parsing():
    which = lambda name: "/usr/bin/nvidia-smi"
    ok = lambda *a, **k: types.SimpleNamespace(returncode=0, stdout="535.104.05\n535.104.05\n")
    assert mxnet_build.nvidia_driver(ok, which) == ("535.104.05", 2)
    failing = lambda *a, **k: types.SimpleNamespace(
        returncode=9, stdout="NVIDIA-SMI has failed because it couldn't communicate with the driver")
    assert mxnet_build.nvidia_driver(failing, which) is None
    assert mxnet_build.nvidia_driver(ok, lambda name: None) is None


def test_install_plan_never_leaves_two_builds():
    assert mxnet_build.install_plan("mxnet", [("mxnet", "1.9.1")]) == []
    assert mxnet_build.install_plan("mxnet-cu117", [("mxnet", "1.9.1")]) == [
        ["uninstall", "-y", "mxnet"], ["install", "mxnet-cu117==1.9.1"]]
    assert mxnet_build.install_plan("mxnet", [("mxnet", "1.9.1"), ("mxnet-cu117", "1.9.1")]) == [
        ["uninstall", "-y", "mxnet", "mxnet-cu117"], ["install", "mxnet==1.9.1"]]
    assert mxnet_build.install_plan("mxnet", []) == [["install", "mxnet==1.9.1"]]
    assert mxnet_build.install_plan("mxnet", [("mxnet", "1.8.0")])[0] == ["uninstall", "-y", "mxnet"]


def test_build_names_exclude_tools():
    dists = [types.SimpleNamespace(metadata={"Name": n}, version="1.9.1")
             for n in ("mxnet", "mxnet_cu117", "mxnet-model-server", "mxnet-to-coreml", "numpy")]
    assert mxnet_build.installed_builds(dists) == [("mxnet", "1.9.1"), ("mxnet-cu117", "1.9.1")]


def test_extras_and_requirements_name_one_build_each():
    extras = mxnet_build.extras()
    assert extras["cpu"] == ["mxnet==1.9.1"] and extras["cu117"] == ["mxnet-cu117==1.9.1"]
    assert all(len(v) == 1 for v in extras.values())
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = [l.split("==")[0].strip() for l in f if l.strip() and not l.startswith("#")]
    # install_requires must not pull a build: `pip install .[cu117]` would add the CPU one over it
    assert not [p for p in pins if mxnet_build.is_build(p)]


def _run(*args, path=None):
    env = dict(os.environ, PATH=path or os.environ["PATH"])
    env.pop("MXNET", None)
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True,
                          env=env, timeout=60)


def test_script_choose_with_a_fake_nvidia_smi(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 515.65.01\n")
    fake.chmod(0o755)
    out = _run("choose", path="%s:%s" % (tmp_path, os.environ["PATH"]))
    assert out.returncode == 0 and out.stdout.strip() == "mxnet-cu117", out.stderr
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    out = _run("choose", path="%s:%s" % (tmp_path, os.environ["PATH"]))
    assert out.stdout.strip() == "mxnet"


def test_script_install_dry_run_and_bad_name():
    # this interpreter has the CPU build: switching to CUDA uninstalls it first
    out = _run("install", "--mxnet", "cu117", "--python", sys.executable, "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "pip uninstall -y mxnet" in lines[0] and "pip install mxnet-cu117==1.9.1" in lines[1]
    out = _run("install", "--mxnet", "cpu", "--python", sys.executable, "--dry-run")
    assert "already installed, the only MXNet build" in out.stdout
    out = _run("choose", "--mxnet", "cu999")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
