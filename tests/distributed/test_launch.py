"""distributed/launch.py on loopback: a real ps-lite job (scheduler, servers, workers of MXNet).

Every job runs under a hard subprocess timeout so a hang fails the test instead of CI.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mxcnn.distributed import launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = [sys.executable, os.path.join(ROOT, "distributed", "launch.py")]
HARD_TIMEOUT = 120

# Trains a small conv net (no BatchNorm, so half batches give the same gradients) on
# synthetic data.  Worker r takes its half of every global batch, as a trainer shards by
# kv.rank / kv.num_workers; with kv "none" one process trains on the whole batches.
FIT_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import mxnet as mx
    kv_type, out = sys.argv[1], sys.argv[2]
    kv = mx.kv.create(kv_type) if kv_type != "none" else None
    rank, workers = (kv.rank, kv.num_workers) if kv is not None else (0, 1)
    rng = np.random.RandomState(0)
    batch, batches = 32, 6
    x = rng.rand(batches * batch, 3, 8, 8).astype("float32")
    y = rng.randint(0, 4, batches * batch).astype("float32")
    part = batch // workers
    mine = np.arange(batches * batch).reshape(batches, workers, part)[:, rank].ravel()
    it = mx.io.NDArrayIter(x[mine], y[mine], batch_size=part)
    net = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), name="c1")
    net = mx.sym.Activation(net, act_type="relu")
    net = mx.sym.FullyConnected(mx.sym.flatten(net), num_hidden=4, name="fc")
    net = mx.sym.SoftmaxOutput(net, name="softmax")
    mod = mx.mod.Module(net, context=mx.cpu())
    mx.random.seed(1)
    mod.fit(it, num_epoch=2, kvstore=kv if kv is not None else "local", optimizer="sgd",
            optimizer_params={"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4},
            initializer=mx.init.Xavier(rnd_type="gaussian", magnitude=2))
    mx.nd.save("%s.%d" % (out, rank), mod.get_params()[0])
    print("trained rank", rank, "of", workers)
""")

# Registers with the job, writes its pid, then pushes/pulls forever (a training loop).
LOOP_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import mxnet as mx
    kv = mx.kv.create("dist_sync")
    kv.init(3, mx.nd.ones((4,)))
    out = mx.nd.zeros((4,))
    kv.pull(3, out=out)
    out.wait_to_read()
    with open(os.path.join(sys.argv[1], "pid.%d" % kv.rank), "w") as handle:
        handle.write(str(os.getpid()))
    while True:
        kv.push(3, mx.nd.ones((4,)))
        kv.pull(3, out=out)
        out.wait_to_read()
        time.sleep(0.01)
""")


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_dist_sync_two_workers_match_one_process(tmp_path):
    script = _write(tmp_path, "fit.py", FIT_SCRIPT)
    out = str(tmp_path / "params")
    job = subprocess.run(LAUNCH + ["-n", "2", "-s", "1", "--", sys.executable, script,
                                   "dist_sync", out + "_dist"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=HARD_TIMEOUT)
    assert job.returncode == 0, job.stderr
    assert "[worker 0] trained rank" in job.stdout and "[worker 1] trained rank" in job.stdout
    assert "of 2" in job.stdout
    single = subprocess.run([sys.executable, script, "none", out + "_single"], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=HARD_TIMEOUT)
    assert single.returncode == 0, single.stderr

    import mxnet as mx
    reference = mx.nd.load(out + "_single.0")
    for rank in (0, 1):
        dist = mx.nd.load("%s_dist.%d" % (out, rank))
        assert sorted(dist) == sorted(reference)
        for name, value in reference.items():
            moved = abs(value).max().asscalar()
            assert moved > 0.05
            assert abs(dist[name] - value).max().asscalar() < 1e-4 * max(1.0, moved), name


def test_train_cifar_benchmark_runs_as_two_workers(tmp_path):
    # the project's trainer under the launcher: both workers train in lock-step (same
    # metrics, since dist_sync gives them the same weights) and report their speed
    job = subprocess.run(LAUNCH + ["-n", "2", "-s", "1", "--", sys.executable,
                                   os.path.join(ROOT, "train", "train_cifar.py"), "--benchmark", "1",
                                   "--kv-store", "dist_sync", "--network", "resnet", "--num-layers", "8",
                                   "--num-batches", "3", "--num-epochs", "1", "--batch-size", "16"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=HARD_TIMEOUT)
    assert job.returncode == 0, job.stderr[-2000:]
    output = job.stdout + job.stderr
    losses = {}
    for line in output.splitlines():
        if "Train-cross-entropy=" in line:
            losses[line.split("]", 1)[0]] = line.rsplit("=", 1)[1]
        if "benchmark:" in line:
            assert "img/s" in line
    assert sorted(losses) == ["[worker 0", "[worker 1"] and len(set(losses.values())) == 1, output[-2000:]


def test_killed_worker_ends_the_job_quickly(tmp_path):
    script = _write(tmp_path, "loop.py", LOOP_SCRIPT)
    job = subprocess.Popen(LAUNCH + ["-n", "2", "-s", "1", "--", sys.executable, script,
                                     str(tmp_path)],
                           cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        pid_files = [tmp_path / "pid.0", tmp_path / "pid.1"]
        deadline = time.monotonic() + 60
        while not all(p.exists() and p.read_text() for p in pid_files):
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline, "workers never started"
            time.sleep(0.1)
        victim, survivor = (int(p.read_text()) for p in pid_files)
        os.kill(victim, signal.SIGKILL)
        _, err = job.communicate(timeout=60)  # the hang guard: the job must stop by itself
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in err and "stopping the job" in err
    time.sleep(0.5)
    assert not _alive(survivor), "the surviving worker was left running"


def test_failing_worker_exit_status_is_returned(tmp_path):
    job = subprocess.run(LAUNCH + ["-n", "2", "--", sys.executable, "-c",
                                   "import sys, mxnet as mx\n"
                                   "kv = mx.kv.create('dist_sync')\n"
                                   "sys.exit(3 if kv.rank == 1 else 0)"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=HARD_TIMEOUT)
    assert job.returncode == 3
    assert "failed (exit status 3)" in job.stderr


def test_ssh_launcher_exports_the_environment(tmp_path):
    # Stand-ins for `ssh` (runs the remote command string here, as sshd hands it to the login
    # shell) and `rsync` (copies the folder); the nodes see DMLC_* only through the exports.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text("#!/bin/sh\nfor last; do :; done\nexec sh -c \"$last\"\n")
    (bindir / "rsync").write_text(
        "#!%s\nimport shutil, sys\n"
        "shutil.copytree(sys.argv[-2], sys.argv[-1].split(':', 1)[1], dirs_exist_ok=True)\n"
        % sys.executable)
    for tool in ("ssh", "rsync"):
        (bindir / tool).chmod(0o755)
    hostfile = _write(tmp_path, "hosts", "# two names for this machine\nlocalhost\n127.0.0.1:2222\n")
    workdir = tmp_path / "work"
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]), MXCNN_TEST_TAG="t1")
    for name in list(env):
        if name.startswith("DMLC_"):
            del env[name]
    code = ("import os, mxnet as mx\n"
            "kv = mx.kv.create('dist_sync')\n"
            "print('node', os.environ['DMLC_ROLE'], os.environ.get('MXCNN_TEST_TAG'),"
            " os.environ['DMLC_NODE_HOST'], os.getcwd(), kv.num_workers)\n")
    job = subprocess.run(LAUNCH + ["-n", "2", "-s", "1", "--launcher", "ssh", "-H", hostfile,
                                   "--host-ip", "127.0.0.1", "--env", "MXCNN_TEST_TAG",
                                   "--sync-dst-dir", str(workdir), "--", sys.executable, "-c", code],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=HARD_TIMEOUT)
    assert job.returncode == 0, job.stderr
    lines = sorted(l for l in job.stdout.splitlines() if " node " in l)
    # one line per worker, each with DMLC_NODE_HOST resolved to an address
    assert lines == ["[worker 0] node worker t1 127.0.0.1 %s 2" % workdir,
                     "[worker 1] node worker t1 127.0.0.1 %s 2" % workdir]
    assert (workdir / "hosts").exists()  # --sync-dst-dir copied the folder first


def test_plan_and_environment():
    nodes = launch.plan_nodes(3, 2, [("localhost", 22), ("127.0.0.2", 2200)])
    assert [(n.label, n.host) for n in nodes] == [
        ("scheduler", None), ("server 0", "localhost"), ("server 1", "127.0.0.2"),
        ("worker 0", "localhost"), ("worker 1", "127.0.0.2"), ("worker 2", "localhost")]
    env = launch.node_env(nodes[4], "10.0.0.1", 9000, 3, 2, {"PS_VERBOSE": "1"})
    assert env["DMLC_ROLE"] == "worker" and env["DMLC_PS_ROOT_URI"] == "10.0.0.1"
    assert env["DMLC_PS_ROOT_PORT"] == "9000" and env["DMLC_NUM_WORKER"] == "3"
    assert env["DMLC_NUM_SERVER"] == "2" and env["DMLC_NODE_HOST"] == "127.0.0.2"
    assert launch.node_env(nodes[3], "10.0.0.1", 9000, 3, 2)["DMLC_NODE_HOST"] == "127.0.0.1"
    assert env["PS_VERBOSE"] == "1"
    argv = launch.ssh_command("127.0.0.2", 2200, env, ["python", "my script.py"], "/w d")
    assert argv[:2] == ["ssh", "-o"] and argv[argv.index("-p") + 1] == "2200"
    assert "'my script.py'" in argv[-1] and "DMLC_ROLE=worker" in argv[-1]


@pytest.mark.parametrize("argv, message", [
    (["-n", "2"], "no command to launch"),
    (["-n", "0", "--", "true"], "at least 1"),
    (["-n", "1", "--launcher", "ssh", "--", "true"], "needs -H/--hostfile"),
    (["-n", "1", "-H", "hosts", "--", "true"], "only used with --launcher ssh"),
    (["-n", "1", "--env-worker", "NOVALUE", "--", "true"], "NAME=VALUE"),
    (["-n", "1", "--launcher", "ssh", "-H", "/nonexistent/hosts", "--", "true"], "cannot read hostfile"),
    (["-n", "1", "--", "/nonexistent/program"], "cannot start"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys):
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_hostfile_line(tmp_path):
    path = _write(tmp_path, "hosts", "good\nbad host:x\n")
    with pytest.raises(launch.JobFailed, match="line 2"):
        launch.read_hostfile(path)


# ------------------------------------------------------------------ GPUs, threads, watchdog

def test_split_gpus_gives_each_worker_of_a_host_its_own():
    local = launch.plan_nodes(2, 1)
    assert launch.split_gpus(local) == {}
    assert launch.split_gpus(local, [0, 1, 2, 3]) == {0: [0, 1], 1: [2, 3]}
    assert launch.split_gpus(local, None, 1) == {0: [0], 1: [1]}
    assert launch.split_gpus(local, [4, 5, 6, 7], 1) == {0: [4], 1: [5]}
    # over ssh, workers are numbered per host: both hosts use their own GPUs 0..3
    remote = launch.plan_nodes(4, 2, [("a", 22), ("b", 22)])
    assert launch.split_gpus(remote, None, 2) == {0: [0, 1], 2: [2, 3], 1: [0, 1], 3: [2, 3]}
    for gpus, per_worker, message in (([0, 1, 2], None, "multiple of 2"),
                                      ([0, 1], 2, "need 4 GPUs"),
                                      (None, 0, "at least 1")):
        with pytest.raises(launch.JobFailed, match=message) as err:
            launch.split_gpus(local, gpus, per_worker)
        assert err.value.exit_code == 2


def test_node_command_sets_devices_renumbers_gpus_and_threads(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nodes = launch.plan_nodes(2, 1)
    workers = [n for n in nodes if n.role == "worker"]
    command = ["python", "train.py", "--gpus", "0,1,2,3", "--kv-store", "dist_device_sync"]
    assigned = launch.split_gpus(nodes, [0, 1, 2, 3])
    argv, env = launch.node_command(workers[1], command, assigned, workers)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert argv == ["python", "train.py", "--gpus", "0,1", "--kv-store", "dist_device_sync"]
    cores = launch.common.usable_cores(physical=True)
    assert env["OMP_NUM_THREADS"] == str(launch.runtime.omp_threads(cores, True, 2))
    assert env[launch.runtime.WORKERS_PER_HOST_ENV] == "2"
    argv, _ = launch.node_command(workers[0], ["x", "--gpus=0,1,2,3"], assigned, workers)
    assert argv == ["x", "--gpus=0,1"]
    assert launch.node_command(nodes[1], command, assigned, workers) == (command, {"OMP_NUM_THREADS": "1"})
    # under the shell's own CUDA_VISIBLE_DEVICES, launcher ids index the visible GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert launch.node_command(workers[1], command, assigned, workers)[1]["CUDA_VISIBLE_DEVICES"] == "6,7"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    with pytest.raises(launch.JobFailed, match="shows only 1 GPU"):
        launch.node_command(workers[1], command, assigned, workers)
    # remote workers: the share travels as MXCNN_WORKERS_PER_HOST (cores are counted there)
    remote = launch.plan_nodes(2, 1, [("a", 22)])
    rworkers = [n for n in remote if n.role == "worker"]
    _, env = launch.node_command(rworkers[0], command, launch.split_gpus(remote, None, 1), rworkers)
    assert env == {"CUDA_VISIBLE_DEVICES": "0", launch.runtime.WORKERS_PER_HOST_ENV: "2"}


ENV_SCRIPT = ("import os, sys, mxnet as mx\n"
              "kv = mx.kv.create('dist_sync')\n"
              "print('env', kv.rank, os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ['OMP_NUM_THREADS'],"
              " ' '.join(sys.argv[1:]))\n")


def test_each_local_worker_gets_its_own_cuda_visible_devices(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
    job = subprocess.run(LAUNCH + ["-n", "2", "-s", "1", "--gpus-per-worker", "2", "--",
                                   sys.executable, "-c", ENV_SCRIPT, "--gpus", "0,1,2,3", "--x", "1"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=HARD_TIMEOUT)
    assert job.returncode == 0, job.stderr
    seen = sorted(l.split("] ", 1)[1] for l in job.stdout.splitlines() if "] env " in l)
    threads = launch.runtime.omp_threads(launch.common.usable_cores(physical=True), True, 2)
    # worker launch order 0/1 gets GPUs 0,1 / 2,3 (kv.rank may differ), each told --gpus 0,1
    devices = sorted(line.split()[2] for line in seen)
    assert devices == ["0,1", "2,3"], seen
    for line in seen:
        assert line.split()[3] == str(threads) and line.endswith("--gpus 0,1 --x 1"), line


RAISE_SCRIPT = textwrap.dedent("""
    import numpy as np, mxnet as mx
    kv = mx.kv.create("dist_sync")
    x = np.random.RandomState(0).rand(64, 3, 8, 8).astype("float32")
    it = mx.io.NDArrayIter(x, np.zeros(64, "float32"), batch_size=8)
    net = mx.sym.FullyConnected(mx.sym.flatten(mx.sym.var("data")), num_hidden=4)
    mod = mx.mod.Module(mx.sym.SoftmaxOutput(net, name="softmax"), context=mx.cpu())
    def raise_mid_epoch(param):
        if kv.rank == 1 and param.nbatch == 3:
            raise RuntimeError("diverged on purpose")
    mod.fit(it, num_epoch=1000, kvstore=kv, optimizer="sgd", batch_end_callback=raise_mid_epoch)
""")


def test_worker_raising_mid_epoch_ends_the_job_in_bounded_time(tmp_path):
    # Without the watchdog this job never ends: the raising worker's KVStore waits for its
    # peer in the destructor, the peer waits for the raising worker's gradients.
    script = _write(tmp_path, "raise.py", RAISE_SCRIPT)
    job = subprocess.run(LAUNCH + ["-n", "2", "-s", "1", "--traceback-grace", "5", "--",
                                   sys.executable, script],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=HARD_TIMEOUT)
    assert job.returncode != 0
    assert "RuntimeError: diverged on purpose" in job.stderr
    assert "printed a traceback" in job.stderr or "failed (" in job.stderr, job.stderr[-1500:]


def test_default_watchdog_is_bounded():
    assert 0 < launch.TRACEBACK_GRACE <= 120
    args = launch.build_parser().parse_args(["-n", "1", "--", "true"])
    assert args.traceback_grace == launch.TRACEBACK_GRACE


@pytest.mark.parametrize("argv, message", [
    (["-n", "2", "--gpus", "0,x", "--", "true"], "malformed"),
    (["-n", "2", "--gpus", "0,0", "--", "true"], "twice"),
    (["-n", "2", "--gpus", "0,1,2", "--", "true"], "multiple of 2"),
])
def test_bad_gpu_options_give_one_line(argv, message, capsys):
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# The trainer itself, one worker failing mid-epoch: it must exit by itself (the launcher's
# traceback watchdog is switched off here), and the launcher then ends the job.
TRAINER_FAILS = textwrap.dedent("""
    import sys
    sys.path.insert(0, %r)
    from mxcnn.train import fit, train_cifar
    original = fit._train_step

    def fail_on_rank_1(run, batch, rng, epoch, nbatch):
        if run.cfg.rank == 1 and nbatch == 2:
            raise OSError(28, "No space left on device (injected)")
        return original(run, batch, rng, epoch, nbatch)

    fit._train_step = fail_on_rank_1
    sys.exit(train_cifar.main())
""")


def test_trainer_worker_raising_exits_promptly_without_the_watchdog(tmp_path):
    script = _write(tmp_path, "fails.py", TRAINER_FAILS % ROOT)
    job = subprocess.run(LAUNCH + ["-n", "2", "-s", "1", "--traceback-grace", "0", "--",
                                   sys.executable, script, "--benchmark", "1", "--kv-store",
                                   "dist_sync", "--network", "resnet", "--num-layers", "8",
                                   "--num-batches", "50", "--num-epochs", "1", "--batch-size", "8"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=HARD_TIMEOUT)
    assert job.returncode == 1, job.stderr[-2000:]
    assert "No space left on device (injected)" in job.stderr
    assert "without waiting for the other workers" in job.stderr
    assert "failed (exit status 1)" in job.stderr
