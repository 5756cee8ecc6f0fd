"""The installed distribution: console scripts resolve, and no generic top-level names leak."""
import importlib.metadata as md
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scripts():
    try:
        dist = md.distribution("mxcnn")
    except md.PackageNotFoundError:
        pytest.skip("mxcnn is not installed in this environment (make setup installs it)")
    return [ep for ep in dist.entry_points if ep.group == "console_scripts"]


def test_console_scripts_resolve():
    scripts = _scripts()
    assert {ep.name for ep in scripts} >= {"mxcnn-train", "mxcnn-prepare-cifar", "mxcnn-inspect"}
    for ep in scripts:
        assert callable(ep.load()), ep.name


def test_installed_packages_live_under_mxcnn():
    _scripts()
    code = ("import importlib.util as u; "
            "print(u.find_spec('mxcnn.symbols') is not None, u.find_spec('symbols') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.stdout.split() == ["True", "True"], out.stderr
