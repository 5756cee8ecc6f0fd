"""common/runtime.py: defaults fill only what the user has not set, before MXNet loads."""
import os
import subprocess
import sys

import pytest

from mxcnn import common
from mxcnn.common import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_are_environment_strings():
    for key, value in runtime.DEFAULTS.items():
        assert key.isupper() and isinstance(value, str) and value, key
    assert "OMP_NUM_THREADS" not in runtime.DEFAULTS  # filled from the usable cores


def test_configure_sets_every_default_and_the_threads():
    environ = {}
    applied = runtime.configure(environ, uses_gpu=False)
    expected = dict(runtime.DEFAULTS, OMP_NUM_THREADS=str(common.usable_cores(physical=True)))
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
        quota = common.system.cpu_quota()
        expected = len(os.sched_getaffinity(0))
        assert cores == (min(expected, max(1, int(quota))) if quota else expected)
        # under taskset to one core, the default thread count is 1
        out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                              "from mxcnn.common import runtime; "
                              "print(runtime.configure({})['OMP_NUM_THREADS'])"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=ROOT))
        if out.returncode == 0:
            assert out.stdout.strip() == "1"


def test_configure_reaches_mxnet_before_it_loads():
    # MXNet reads its engine settings when the library loads: the values configure() puts
    # into os.environ must be what the process (and so libmxnet) sees.
    code = ("import os\n"
            "from mxcnn.common import runtime\n"
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


def test_threads_leave_cores_for_mxnet_gpu_workers():
    # MXNet reserves 1 core for its GPU worker threads, 2 from 8 cores on
    assert runtime.omp_threads(16) == 16
    assert runtime.omp_threads(16, uses_gpu=True) == 14
    assert runtime.omp_threads(4, uses_gpu=True) == 3
    assert runtime.omp_threads(1, uses_gpu=True) == 1
    # co-located workers split the cores first, then each reserves for its own GPUs
    assert runtime.omp_threads(16, uses_gpu=True, sharing=2) == 6
    assert runtime.omp_threads(16, sharing=4) == 4
    assert runtime.omp_threads(2, sharing=4) == 1


def test_configure_reads_gpus_and_the_launchers_share():
    assert runtime.configure({}, uses_gpu=True, cores=8) == {"OMP_NUM_THREADS": "6"}
    share = {runtime.WORKERS_PER_HOST_ENV: "2"}
    assert runtime.configure(share, uses_gpu=False, cores=8)["OMP_NUM_THREADS"] == "4"
    assert runtime.configure({runtime.WORKERS_PER_HOST_ENV: "junk"}, uses_gpu=False,
                             cores=8)["OMP_NUM_THREADS"] == "8"
    for argv, expected in ((["--gpus", "0,1"], True), (["--gpus=0"], True), (["--cpus", "2"], False),
                           (["--gpus", ""], False), ([], False)):
        assert runtime.argv_uses_gpu(argv) is expected, argv
    out = subprocess.run([sys.executable, "-c", "from mxcnn.common import runtime; "
                          "print(runtime.configure({}, cores=4)['OMP_NUM_THREADS'])",
                          "--network", "resnet", "--gpus", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.stdout.strip() == "3", out.stderr


def test_deterministic_settings_for_a_faked_gpu_job():
    class FakeContext:  # stands in for mx.gpu(k): no GPU is needed to decide the settings
        def __init__(self, device_type):
            self.device_type = device_type

    gpu_env = runtime.deterministic_env([FakeContext("gpu"), FakeContext("gpu")])
    assert gpu_env == {"MXNET_ENFORCE_DETERMINISM": "1", "MXNET_CUDNN_AUTOTUNE_DEFAULT": "0"}
    assert runtime.deterministic_env([FakeContext("cpu")]) == {"MXNET_ENFORCE_DETERMINISM": "1"}
    import mxnet as mx
    assert runtime.deterministic_env([mx.gpu(0)]) == gpu_env  # a Context object, never bound


def test_two_mxnet_builds_are_refused_in_one_line(capsys):
    import pytest
    runtime.check_single_build([("mxnet", "1.9.1")])  # one build: nothing happens
    with pytest.raises(SystemExit) as exit_:
        runtime.check_single_build([("mxnet", "1.9.1"), ("mxnet-cu117", "1.9.1")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip uninstall -y mxnet mxnet-cu117" in err
    runtime.check_single_build()  # this environment holds exactly one build


@pytest.mark.parametrize(
    "argv, environ, engine",
    [
        (["--batch-size", "1"], {}, runtime.INFERENCE_ENGINE),
        (["--cpus", "1"], {}, runtime.INFERENCE_ENGINE),
        (["--cpus", "2"], {}, None),
        (["--cpus=4"], {}, None),
        (["--gpus", "0"], {}, None),
        (["--batch-size", "1"], {"MXNET_ENGINE_TYPE": "ThreadedEngine"}, "ThreadedEngine"),
    ],
)
def test_inference_engine_on_one_cpu_only(argv, environ, engine):
    environ = dict(environ)
    runtime.inference_engine(argv, environ)
    assert environ.get("MXNET_ENGINE_TYPE") == engine


def test_score_runs_on_the_inference_engine(tmp_path):
    """score.py sets the engine before MXNet loads: MXNet itself reports it in use."""
    env = {k: v for k, v in os.environ.items() if k != "MXNET_ENGINE_TYPE"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "inference", "score.py"), "--model-prefix",
                          str(tmp_path / "none"), "--load-epoch", "1", "--data-val", str(tmp_path / "x.rec")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert "MXNet start using engine: " + runtime.INFERENCE_ENGINE in out.stderr + out.stdout
