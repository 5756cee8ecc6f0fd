"""Facts about the machine this process runs on."""
import os

__all__ = ["usable_cores"]


def usable_cores():
    """Cores this process may run on: its affinity set (taskset, cgroup cpusets) on Linux."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
