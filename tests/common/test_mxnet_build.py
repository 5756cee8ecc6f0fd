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


def _smi(stdout, returncode=0, seen=None):
    """A fake ``subprocess.run`` for nvidia-smi that records the arguments it was given."""
    def run(args, **kwargs):
        if seen is not None:
            seen.append(args)
        return types.SimpleNamespace(returncode=returncode, stdout=stdout)
    return run


def test_compute_caps_from_nvidia_smi():
    which = lambda name: "/usr/bin/nvidia-smi"
    seen = []
    assert mxnet_build.gpu_compute_caps(_smi("8.6\n9.0\n", seen=seen), which) == [(8, 6), (9, 0)]
    assert "--query-gpu=compute_cap" in seen[0]
    # an nvidia-smi too old for the field, a driver version where a capability belongs, no tool
    old = _smi('Field "compute_cap" is not a valid field to query.\n', returncode=2)
    assert mxnet_build.gpu_compute_caps(old, which) is None
    assert mxnet_build.gpu_compute_caps(_smi("515.65.01\n"), which) is None
    assert mxnet_build.gpu_compute_caps(_smi("12.0\n"), lambda name: None) is None


def test_wheel_archs_name_every_cuda_build():
    assert set(mxnet_build.WHEEL_ARCHS) == {package for package, _, _ in mxnet_build.CUDA_BUILDS}


@pytest.mark.parametrize("cap, package", [
    ((8, 9), "mxnet-cu117"),   # Ada runs Ampere's sm_80/sm_86 SASS (same major)
    ((7, 5), "mxnet-cu110"),   # Turing runs sm_70 SASS
    ((3, 7), "mxnet-cu102"),   # K80 runs sm_30 SASS
    ((6, 1), "mxnet-cu117"),
    ((8, 6), "mxnet-cu111"),
])
def test_gpus_with_machine_code_get_no_warning(cap, package):
    assert mxnet_build.arch_warning([cap, cap], package) is None


def test_no_warning_without_a_known_gpu_or_for_the_cpu_build():
    assert mxnet_build.arch_warning(None, "mxnet-cu117") is None
    assert mxnet_build.arch_warning([], "mxnet-cu117") is None
    assert mxnet_build.arch_warning([(9, 0)], "mxnet") is None


@pytest.mark.parametrize("cap, generation", [((9, 0), "Hopper"), ((10, 0), "Blackwell"),
                                             ((12, 0), "Blackwell")])
def test_gpus_newer_than_every_wheel_are_told_to_use_the_cpu(cap, generation):
    text = mxnet_build.arch_warning([cap], "mxnet-cu117")
    assert "%d.%d (%s)" % (cap + (generation,)) in text and "no PTX" in text
    assert "no kernel image" in text and "MXNET=cpu" in text and "CUDA 11.7" in text
    assert "\n" not in text and "PTX JIT" not in text


def test_an_older_or_newer_build_is_named_when_it_has_the_code():
    kepler = mxnet_build.arch_warning([(3, 5)], "mxnet-cu117")
    assert "3.5 (Kepler)" in kepler and "MXNET=cu102" in kepler and "440.33" in kepler
    ampere = mxnet_build.arch_warning([(8, 0)], "mxnet-cu101")
    assert "MXNET=cu117" in ampere and "sm_30 sm_50 sm_60 sm_70 sm_75" in ampere
    mixed = mxnet_build.arch_warning([(3, 7), (8, 0)], "mxnet-cu117")  # no build has both
    assert "3.7 (Kepler)" in mixed and "8.0" not in mixed and "CUDA_VISIBLE_DEVICES" in mixed


def test_ptx_jit_route_says_what_breaks_it():
    archs = {"mxnet-cu117": ((80,), (86,))}  # a wheel with PTX, unlike every 1.9.1 wheel
    text = mxnet_build.arch_warning([(9, 0)], "mxnet-cu117", archs)
    assert "PTX JIT" in text and "compute_86" in text and "minor version compatibility" in text
    assert "515.43.04" in text and "CUDA_DISABLE_PTX_JIT" in text and "no kernel image" not in text
    assert mxnet_build.arch_warning([(8, 6)], "mxnet-cu117", archs) is None
    older = mxnet_build.arch_warning([(7, 5)], "mxnet-cu117", archs)  # PTX JIT only goes up
    assert "no kernel image" in older


def test_docs_table_matches_the_wheel_data():
    with open(os.path.join(ROOT, "docs", "gpu.md")) as f:
        rows = [l for l in f if l.startswith("| `cu")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        package = "mxnet-" + cells[0].strip("`")
        if package in mxnet_build.WHEEL_ARCHS and "sm_" in cells[1]:
            ptx = [a for a in cells[2].split() if a.startswith("compute_")]
            table[package] = (tuple(int(a[3:]) for a in cells[1].split()),
                              tuple(int(a[8:]) for a in ptx))
    assert table == mxnet_build.WHEEL_ARCHS


def _fake_smi(folder, compute_cap):
    fake = folder / "nvidia-smi"
    fake.write_text('#!/bin/sh\ncase "$1" in --query-gpu=compute_cap) echo %s;; '
                    '*) echo 535.104.05;; esac\n' % compute_cap)
    fake.chmod(0o755)
    return "%s:%s" % (folder, os.environ["PATH"])


def test_script_warns_in_one_line_for_a_gpu_without_code(tmp_path):
    path = _fake_smi(tmp_path, "9.0")
    out = _run("choose", path=path)
    assert out.returncode == 0 and out.stdout.strip() == "mxnet-cu117", out.stderr
    warnings = [l for l in out.stderr.splitlines() if "warning" in l]
    assert len(warnings) == 1 and "9.0 (Hopper)" in warnings[0] and "MXNET=cpu" in warnings[0]
    out = _run("install", "--mxnet", "cu117", "--python", sys.executable, "--dry-run", path=path)
    assert out.returncode == 0 and "9.0 (Hopper)" in out.stderr
    out = _run("choose", path=_fake_smi(tmp_path, "8.6"))
    assert out.stdout.strip() == "mxnet-cu117" and "warning" not in out.stderr
    out = _run("choose", "--mxnet", "cpu", path=_fake_smi(tmp_path, "9.0"))
    assert "warning" not in out.stderr
