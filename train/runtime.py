"""Process-wide MXNet settings, applied by every entry point before ``import mxnet``.

MXNet reads these from the environment when the library loads, so ``configure()`` must
run first.  A value the user already exported always wins.
"""
import contextlib
import os

from . import common

#: Defaults from ``bench/throughput.py --knobs`` on a quiet 2-core AVX-512 machine (ResNet-20,
#: batch 128, 3 interleaved rounds; table in the README).  OMP_NUM_THREADS is filled in with
#: the number of usable cores at run time: MXNet's own default ran at 0.54x.  oneDNN stays on
#: (off: 0.25x).  No other knob (bulk execution and its segment sizes, subgraph backend,
#: optimizer aggregation, engine worker threads, OpenMP wait/bind policy, NaiveEngine, Gluon
#: instead of Module) moved speed beyond noise (0.97-1.02x) or it slowed training (2 worker
#: threads 0.89x, passive OpenMP waiting 0.90x), so MXNet's own values stay.  The one
#: default beyond these lives in the graph, not the environment: train.fit.training_graph
#: fuses BatchNorm+ReLU on oneDNN CPUs (graph/fusion.py; bench knob ``no_fusion``).
DEFAULTS = {}


def configure(environ=None):
    """Fill in the thread and engine defaults the user has not set; return what was set."""
    environ = os.environ if environ is None else environ
    wanted = dict(DEFAULTS, OMP_NUM_THREADS=str(common.usable_cores()))
    applied = {}
    for key, value in wanted.items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied


@contextlib.contextmanager
def temporary_env(key, value):
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
