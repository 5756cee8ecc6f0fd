"""common/system.py: affinity, cgroup CPU quotas (v1 and v2) and physical cores, on fake trees."""
import os

from mxcnn.common import system


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_cgroup_v2_quota_takes_the_tightest_ancestor(tmp_path):
    root = str(tmp_path / "cg")
    proc = str(tmp_path / "cgroup")
    _write(proc, "0::/job/step\n")
    _write(os.path.join(root, "cpu.max"), "max 100000\n")
    _write(os.path.join(root, "job", "cpu.max"), "250000 100000\n")
    _write(os.path.join(root, "job", "step", "cpu.max"), "max 100000\n")
    assert system.cpu_quota(root, proc) == 2.5
    _write(os.path.join(root, "job", "step", "cpu.max"), "150000 100000\n")
    assert system.cpu_quota(root, proc) == 1.5


def test_cgroup_v2_unlimited_and_container_root(tmp_path):
    root = str(tmp_path / "cg")
    proc = str(tmp_path / "cgroup")
    _write(proc, "0::/\n")
    _write(os.path.join(root, "cpu.max"), "max 100000\n")
    assert system.cpu_quota(root, proc) is None
    _write(os.path.join(root, "cpu.max"), "400000 100000\n")  # docker --cpus 4
    assert system.cpu_quota(root, proc) == 4.0
    assert system.cpu_quota(str(tmp_path / "missing"), str(tmp_path / "missing")) is None


def test_cgroup_v1_cfs_quota(tmp_path):
    root = str(tmp_path / "cg")
    proc = str(tmp_path / "cgroup")
    _write(proc, "4:memory:/x\n2:cpu,cpuacct:/kubepods/pod1\n0::/\n")
    folder = os.path.join(root, "cpu,cpuacct", "kubepods", "pod1")
    _write(os.path.join(folder, "cpu.cfs_quota_us"), "300000\n")
    _write(os.path.join(folder, "cpu.cfs_period_us"), "100000\n")
    _write(os.path.join(root, "cpu,cpuacct", "cpu.cfs_quota_us"), "-1\n")
    _write(os.path.join(root, "cpu,cpuacct", "cpu.cfs_period_us"), "100000\n")
    assert system.cpu_quota(root, proc) == 3.0


def test_physical_cores_count_hyperthread_siblings_once(tmp_path):
    sysfs = str(tmp_path / "cpu")
    for cpu, siblings in ((0, "0,4"), (4, "0,4"), (1, "1,5"), (5, "1,5"), (2, "2")):
        _write(os.path.join(sysfs, "cpu%d" % cpu, "topology", "thread_siblings_list"), siblings)
    assert system.physical_cores({0, 1, 4, 5}, sysfs) == 2
    assert system.physical_cores({0, 1, 2}, sysfs) == 3
    assert system.physical_cores({0, 9}, sysfs) == 2  # cpu9 without topology: its own core


def test_usable_cores_is_the_smallest_limit():
    cpus = set(range(8))
    assert system.usable_cores(cpus=cpus, quota=False) == 8
    assert system.usable_cores(cpus=cpus, quota=2.5) == 2
    assert system.usable_cores(cpus=cpus, quota=0.5) == 1
    assert system.usable_cores(cpus={0}, quota=4.0) == 1


def test_this_machine():
    assert system.usable_cores() >= 1
    assert 1 <= system.usable_cores(physical=True) <= system.usable_cores()
