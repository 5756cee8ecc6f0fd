"""Process-wide MXNet settings, applied by every entry point before ``import mxnet``.

MXNet reads these from the environment when the library loads, so ``configure()`` must
run first.  A value the user already exported always wins.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING

from mxcnn import common

if TYPE_CHECKING:
    import mxnet as mx

#: Defaults from ``bench/throughput.py --knobs`` on a quiet 2-core AVX-512 machine (ResNet-20,
#: batch 128, 3 interleaved rounds; table in the README).  OMP_NUM_THREADS is filled in at run
#: time by :func:`omp_threads` (one thread per usable physical core): MXNet's own default ran
#: at 0.54x.  oneDNN stays on
#: (off: 0.25x).  No other knob (bulk execution and its segment sizes, subgraph backend,
#: optimizer aggregation, engine worker threads, OpenMP wait/bind policy, NaiveEngine, Gluon
#: instead of Module) moved speed beyond noise (0.97-1.02x) or it slowed training (2 worker
#: threads 0.89x, passive OpenMP waiting 0.90x), so MXNet's own values stay.  The one
#: default beyond these lives in the graph, not the environment: train.fit.training_graph
#: fuses BatchNorm+ReLU on oneDNN CPUs (graph/fusion.py; bench knob ``no_fusion``).
DEFAULTS = {}

#: Set by distributed/launch.py: how many worker processes share this host's cores.
WORKERS_PER_HOST_ENV = "MXCNN_WORKERS_PER_HOST"


def omp_threads(cores: int, uses_gpu: bool = False, sharing: int = 1) -> int:
    """OpenMP threads for one process: its share of ``cores`` (physical, after affinity and
    cgroup quota), less the cores MXNet keeps for its GPU worker threads.

    ``sharing`` processes split the cores evenly (co-located workers of one job).  With GPUs,
    MXNet's engine reserves one core for GPU work, two from 8 cores on
    (``ThreadedEnginePerDevice::GetReserveCoreCount`` -> ``OpenMP::set_reserve_cores``); an
    explicit OMP_NUM_THREADS covering every core would leave none to it.  At least 1.
    """
    share = max(1, int(cores) // max(1, int(sharing)))
    if uses_gpu:
        share -= 2 if share >= 8 else 1
    return max(1, share)


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value after ``flag`` (``--flag V`` or ``--flag=V``) in ``argv``, else None."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def argv_uses_gpu(argv: Sequence[str]) -> bool:
    """True when ``argv`` has a non-empty ``--gpus`` value (every entry point's flag)."""
    value = flag_value(argv, "--gpus")
    return value is not None and value.strip() not in ("", "-1")


#: The engine for inference on CPUs: MXNet's threaded engine hands each forward to its worker
#: thread and back; running the ops in the calling thread took ResNet-20's batch-1 median from
#: 0.88-0.94 ms to 0.65-0.77 ms with one OpenMP thread and from 0.52-0.72 ms to 0.46 ms with
#: two, batch 64 unchanged (Intel Xeon, avx512_vnni, quiet machine, interleaved processes).
#: Training keeps the threaded engine, which overlaps the kvstore and several devices.
INFERENCE_ENGINE = "NaiveEngine"


def inference_engine(argv: Sequence[str], environ: MutableMapping[str, str]) -> str | None:
    """Set MXNET_ENGINE_TYPE to :data:`INFERENCE_ENGINE` for inference on one CPU context
    (no ``--gpus``, ``--cpus`` absent or 1) unless the user set it; return what was set.
    Several contexts keep the threaded engine, which runs them side by side."""
    cpus = flag_value(argv, "--cpus")
    if "MXNET_ENGINE_TYPE" in environ or argv_uses_gpu(argv) or (cpus or "1").strip() not in ("", "1"):
        return None
    environ["MXNET_ENGINE_TYPE"] = INFERENCE_ENGINE
    return INFERENCE_ENGINE


def _sharing(environ):
    value = str(environ.get(WORKERS_PER_HOST_ENV, "1")).strip()
    return int(value) if value.isdigit() and int(value) >= 1 else 1


def configure(environ: MutableMapping[str, str] | None = None, uses_gpu: bool | None = None,
              cores: int | None = None) -> dict[str, str]:
    """Fill in the thread and engine defaults the user has not set; return what was set.

    MXNet reads OMP_NUM_THREADS when it loads, before any argument parser runs, so
    ``uses_gpu=None`` looks for ``--gpus`` in ``sys.argv``.  ``cores`` (default: usable
    physical cores, :func:`common.usable_cores`) is for tests.
    """
    if environ is None:
        check_single_build()
    environ = os.environ if environ is None else environ
    if uses_gpu is None:
        uses_gpu = argv_uses_gpu(sys.argv[1:])
    if cores is None:
        cores = common.usable_cores(physical=True)
    threads = omp_threads(cores, uses_gpu, _sharing(environ))
    wanted = dict(DEFAULTS, OMP_NUM_THREADS=str(threads))
    applied = {}
    for key, value in wanted.items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied


def check_single_build(builds: Sequence[tuple[str, str]] | None = None) -> None:
    """Exit 2 with one line when two MXNet builds share this environment.

    Every MXNet wheel (``mxnet``, ``mxnet-cu117``, ...) installs the same ``mxnet/`` folder,
    so with two of them the files are a mix of both (``pip install .[cu117]`` next to an
    existing ``mxnet`` does that).  ``make setup`` never leaves two; this catches the rest.
    """
    import importlib
    mxnet_build = importlib.import_module(common.__name__ + ".mxnet_build")
    builds = mxnet_build.installed_builds() if builds is None else builds
    if len(builds) > 1:
        names = [name for name, _ in builds]
        sys.exit(common.cli_error(
            "mxcnn", "%s are installed over each other (they share the mxnet/ folder): run "
            "pip uninstall -y %s, then install one (make setup, or pip install mxnet==1.9.1 / "
            "mxnet-cu117==1.9.1)" % (" and ".join("%s %s" % b for b in builds), " ".join(names))))


def deterministic_env(contexts: Iterable[mx.Context]) -> dict[str, str]:
    """The MXNet settings ``--deterministic`` needs for ``contexts`` (``mx.Context`` objects).

    Everywhere ``MXNET_ENFORCE_DETERMINISM=1``: only deterministic algorithms (MXNet errors
    out where none exists).  With a GPU also ``MXNET_CUDNN_AUTOTUNE_DEFAULT=0``: cuDNN's
    convolution algorithms are chosen by its heuristics instead of by timing them, since a
    timed choice can differ between two processes (a run and its resume) and so change the
    numerics.  Both are read when an operator is created, so setting them before the bind is
    enough; an operator's own ``cudnn_tune`` attribute would override the autotune default
    and no symbol here sets one.  Reduction order across GPUs (kvstore ``device``) and the
    input pipeline are already deterministic.
    """
    env = {"MXNET_ENFORCE_DETERMINISM": "1"}
    if any(getattr(ctx, "device_type", None) == "gpu" for ctx in contexts):
        env["MXNET_CUDNN_AUTOTUNE_DEFAULT"] = "0"
    return env


@contextlib.contextmanager
def temporary_env(key: str, value: str | None) -> Iterator[None]:
    """Set ``key`` to ``value`` for the duration of the block (``None``: leave it as it is).

    For MXNet settings read at bind/initialisation time rather than at library load, e.g.
    ``MXNET_SUBGRAPH_BACKEND`` for one bind or ``MXNET_UPDATE_ON_KVSTORE`` for one optimizer.
    """
    old = os.environ.get(key)
    if value is not None:
        os.environ[key] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
