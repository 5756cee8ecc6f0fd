"""train/launch.py on loopback: a real ps-lite job (scheduler, servers, workers of MXNet).

Every job runs under a hard subprocess timeout so a hang fails the test instead of CI.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from train import launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = [sys.executable, os.path.join(ROOT, "train", "launch.py")]
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
        killed_at = time.monotonic()
        _, err = job.communicate(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in err and "stopping the job" in err
    assert took < 30
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
