"""Process-wide MXNet settings, applied by every entry point before ``import mxnet``.

MXNet reads these from the environment when the library loads, so ``configure()`` must
run first.  A value the user already exported always wins.
"""
import os

#: Defaults from measurements on a 2-core CPU machine (``bench/throughput.py --knobs``).
#: OMP_NUM_THREADS is filled in with the number of usable cores at run time: the one knob
#: known to pay (MXNet alone uses 1 thread on 2 cores: 0.62x).  oneDNN stays on (MXNet's
#: default; off measured 0.42x).  The engine knobs (bulk execution and its segment sizes,
#: subgraph backend, optimizer aggregation, worker threads, OpenMP wait/bind policy, Gluon
#: instead of Module) have so far only been measured on a heavily shared machine (load
#: 11-16 on 2 cores), where the "winners" (2 engine worker threads, passive OpenMP waiting,
#: bound threads) plausibly just grab a larger share of contended cores and would oversubscribe a
#: dedicated one; until a quiet-machine run confirms a gain, MXNet's own values stay.
DEFAULTS = {}


def usable_cores():
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure(environ=None):
    """Fill in the thread and engine defaults the user has not set; return what was set."""
    environ = os.environ if environ is None else environ
    wanted = dict(DEFAULTS, OMP_NUM_THREADS=str(usable_cores()))
    applied = {}
    for key, value in wanted.items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied
