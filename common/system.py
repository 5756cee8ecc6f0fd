"""Facts about the machine this process runs on: how many cores it may use, and its CPU's
feature flags (``cpu_flags``).

Three limits apply on Linux, and the smallest wins:

* the affinity set (``taskset``, cgroup cpusets, a batch scheduler's binding);
* a CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, as
  Docker's ``--cpus`` and Kubernetes CPU limits set it): ``quota / period`` cores of time,
  however many cores are visible;
* for compute threads, physical cores: hyperthreads of one core share its FMA units, so
  one thread per core is what MXNet's own OpenMP default aims at (it halves
  ``omp_get_num_procs()`` on Intel CPUs, ``src/engine/openmp.cc``).
"""
import math
import os
from collections.abc import Iterable

__all__ = ["usable_cores", "affinity_cpus", "cpu_quota", "physical_cores", "cpu_flags",
           "cpuinfo_field"]

_CGROUP_ROOT = "/sys/fs/cgroup"
_CPU_SYSFS = "/sys/devices/system/cpu"


def cpuinfo_field(name: str, path: str = "/proc/cpuinfo") -> str:
    """The value of ``name`` for the first processor in ``path`` ("" where unreadable)."""
    try:
        with open(path) as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``path`` (empty where it is unreadable)."""
    return frozenset(cpuinfo_field("flags", path).split())


def affinity_cpus() -> set[int]:
    """Logical CPU ids this process may run on (all CPUs where affinity is unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroup_dirs(proc_cgroup, root, controller):
    """Folders of this process's cgroup and its ancestors, innermost first.

    ``controller`` None means the v2 unified hierarchy (``0::/path``), else a v1 controller
    (``N:cpu,cpuacct:/path``).  Inside a container the path is usually ``/`` and the
    container's own limits sit at the mount root, which is always included last.
    """
    text = _read(proc_cgroup) or ""
    rel = None
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if controller is None and hier == "0" and names == "":
            rel = path
        elif controller is not None and controller in names.split(","):
            rel = path
    base = root if controller is None else os.path.join(root, _v1_mount(root, controller))
    dirs = []
    if rel:
        parts = [p for p in rel.strip("/").split("/") if p]
        for k in range(len(parts), 0, -1):
            dirs.append(os.path.join(base, *parts[:k]))
    dirs.append(base)
    return dirs


def _v1_mount(root, controller):
    for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        if os.path.isdir(os.path.join(root, name)) and controller in name.split(","):
            return name
    return controller


def cpu_quota(root: str = _CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """Cores' worth of CPU time the cgroup quota allows (e.g. 1.5), or None when unlimited.

    The tightest quota among this process's cgroup and its ancestors, v2 then v1.
    """
    limits = []
    for folder in _cgroup_dirs(proc_cgroup, root, None):
        fields = (_read(os.path.join(folder, "cpu.max")) or "").split()
        if len(fields) == 2 and fields[0] != "max" and fields[0].isdigit() and fields[1].isdigit():
            limits.append(int(fields[0]) / max(1, int(fields[1])))
    for folder in _cgroup_dirs(proc_cgroup, root, "cpu"):
        quota = _read(os.path.join(folder, "cpu.cfs_quota_us"))
        period = _read(os.path.join(folder, "cpu.cfs_period_us"))
        if quota and period and quota.lstrip("-").isdigit() and period.isdigit() \
                and int(quota) > 0:
            limits.append(int(quota) / max(1, int(period)))
    return min(limits) if limits else None


def physical_cores(cpus: Iterable[int] | None = None, sysfs: str = _CPU_SYSFS) -> int:
    """Physical cores among logical ``cpus`` (default: the affinity set).

    Hyperthreads of one core list the same ``topology/thread_siblings_list``; a CPU whose
    topology cannot be read counts as a core of its own.
    """
    cpus = affinity_cpus() if cpus is None else set(cpus)
    cores = set()
    for cpu in cpus:
        siblings = _read(os.path.join(sysfs, "cpu%d" % cpu, "topology", "thread_siblings_list"))
        cores.add(siblings if siblings else "cpu%d" % cpu)
    return max(1, len(cores))


def usable_cores(physical: bool = False, cpus: Iterable[int] | None = None,
                 quota: float | bool | None = None) -> int:
    """Cores this process may keep busy: the affinity set, capped by the cgroup CPU quota
    (rounded down, at least 1); ``physical=True`` counts hyperthread siblings once.

    ``cpus`` / ``quota`` override what is read from the system (tests, planners);
    ``quota=False`` means no quota.
    """
    cpus = affinity_cpus() if cpus is None else set(cpus)
    count = physical_cores(cpus) if physical else len(cpus)
    quota = cpu_quota() if quota is None else quota
    if quota:
        count = min(count, max(1, int(math.floor(quota + 1e-9))))
    return max(1, count)
