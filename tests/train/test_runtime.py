"""train/runtime.py: defaults fill only what the user has not set, before MXNet loads."""
import os
import subprocess
import sys

import common
from train import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_are_environment_strings():
    for key, value in runtime.DEFAULTS.items():
        assert key.isupper() and isinstance(value, str) and value, key
    assert "OMP_NUM_THREADS" not in runtime.DEFAULTS  # filled from the usable cores


def test_configure_sets_every_default_and_the_threads():
    environ = {}
    applied = runtime.configure(environ)
    expected = dict(runtime.DEFAULTS, OMP_NUM_THREADS=str(common.usable_cores()))
    assert environ == expected and applied == expected
    assert runtime.configure(environ) == {}  # a second call changes nothing


def test_user_values_win():
    environ = {"OMP_NUM_THREADS": "7", "UNRELATED": "x"}
    environ.update({key: "user-" + key for key in runtime.DEFAULTS})
    before = dict(environ)
    assert runtime.configure(environ) == {}
    assert environ == before


def test_usable_cores_follows_affinity():
    cores = common.usable_cores()
    assert cores >= 1
    if hasattr(os, "sched_getaffinity"):
        assert cores == len(os.sched_getaffinity(0))
        # under taskset to one core, the default thread count is 1
        out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                              "from train import runtime; print(runtime.configure({})['OMP_NUM_THREADS'])"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=ROOT))
        if out.returncode == 0:
            assert out.stdout.strip() == "1"


def test_configure_reaches_mxnet_before_it_loads():
    # MXNet reads its engine settings when the library loads: the values configure() puts
    # into os.environ must be what the process (and so libmxnet) sees.
    code = ("import os\n"
            "from train import runtime\n"
            "applied = runtime.configure()\n"
            "import mxnet\n"
            "import ctypes\n"
            "getenv = ctypes.CDLL(None).getenv\n"
            "getenv.restype = ctypes.c_char_p\n"
            "print(all(getenv(k.encode()).decode() == v for k, v in applied.items()), sorted(applied))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in runtime.DEFAULTS and k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = ROOT
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("True") and "OMP_NUM_THREADS" in line
