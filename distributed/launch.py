"""Start and supervise an MXNet parameter-server job: one scheduler, S servers, W workers.

MXNet's distributed kvstores (``dist_sync``, ``dist_async``, ...) run on ps-lite, which is
built into libmxnet.  Every node runs the *same* command; the ``DMLC_*`` environment tells
it its role.  In the scheduler and server roles ``import mxnet`` runs the ps-lite loop and
exits when the workers finish, so the training script itself needs nothing special::

    python distributed/launch.py -n 2 -s 1 -- python train/train_cifar.py --kv-store dist_sync ...
    python distributed/launch.py -n 4 -s 2 --launcher ssh -H hosts.txt --sync-dst-dir /tmp/job -- \\
        python train/train_cifar.py --kv-store dist_sync ...

This replaces ``mxnet/tools/launch.py`` (whose tracker crashes on Python 3.9+) and adds the
supervision ps-lite lacks: a node that exits non-zero or dies makes the peers wait forever,
so the launcher ends the whole job (every process group) and exits non-zero.  Output of
every node is forwarded line by line with a ``[role index]`` prefix.  The index is the
launch order; ps-lite assigns ``kv.rank`` itself, and the trainer shards data by
``kv.rank`` / ``kv.num_workers``.

GPUs: ``--gpus-per-worker K`` (or ``--gpus 0,1,2,3`` split evenly) gives each worker of a
host its own GPUs through ``CUDA_VISIBLE_DEVICES`` and renumbers the command's ``--gpus`` to
``0..K-1``, the way CUDA numbers visible devices (``mx.gpu(0)`` is the worker's first GPU)::

    python distributed/launch.py -n 2 -s 2 --gpus-per-worker 2 -- \\
        python train/train_cifar.py --gpus 0,1 --kv-store dist_device_sync ...

Threads: each worker gets its share of the host's physical cores (less MXNet's GPU reserve),
servers and the scheduler one thread (``node_command``).  A worker that printed a Python
traceback and is still running ``--traceback-grace`` seconds later (60 by default: after an
exception MXNet's dist kvstore waits for peers that wait for it) ends the job.

Exit status: 0 when every worker exited 0; otherwise the failing node's status (128+signal
for a node killed by a signal), 1 for a worker stuck after a traceback, 124 on
``--timeout``, 130/143 on Ctrl-C/SIGTERM, 2 for bad arguments.
"""
import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys

from mxcnn import common
from mxcnn.common import runtime
from mxcnn.distributed.supervisor import SHUTDOWN_GRACE, TRACEBACK_GRACE, Job, JobFailed, Node, describe  # noqa: F401

__all__ = ["Node", "JobFailed", "plan_nodes", "node_env", "ssh_command", "read_hostfile",
           "free_port", "split_gpus", "node_command", "run_job", "main"]


def read_hostfile(path):
    """``[(host, ssh_port)]`` from a file of ``host`` or ``host:port`` lines (``#`` comments)."""
    hosts = []
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise JobFailed("cannot read hostfile %s: %s" % (path, exc.strerror), 2)
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, port = line.partition(":")
        if not port:
            port = "22"
        if not host or not port.isdigit() or len(line.split()) != 1:
            raise JobFailed("hostfile %s line %d: expected 'host' or 'host:port', got %r"
                            % (path, number, line), 2)
        hosts.append((host, int(port)))
    if not hosts:
        raise JobFailed("hostfile %s lists no hosts; put one host (or host:port) per line" % path, 2)
    return hosts


def plan_nodes(num_workers, num_servers, hosts=None):
    """The scheduler (on this machine), then servers, then workers.

    With ``hosts`` the servers and workers are placed round-robin over them, servers
    first, as MXNet's ssh launcher does.
    """
    nodes = [Node("scheduler", 0)]
    roles = [("server", i) for i in range(num_servers)] + [("worker", i) for i in range(num_workers)]
    for slot, (role, index) in enumerate(roles):
        host, port = hosts[slot % len(hosts)] if hosts else (None, 22)
        nodes.append(Node(role, index, host, port))
    return nodes


def free_port(host="127.0.0.1"):
    """A TCP port on ``host`` that nothing listens on right now (for the scheduler)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def reachable_ip(peer):
    """This machine's address on the route to ``peer`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((peer, 9))
            return sock.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def node_env(node, root_uri, root_port, num_workers, num_servers, extra=None):
    """The ``DMLC_*`` variables ps-lite reads for ``node`` (plus ``extra`` name->value)."""
    env = {
        "DMLC_ROLE": node.role,
        "DMLC_PS_ROOT_URI": root_uri,
        "DMLC_PS_ROOT_PORT": str(root_port),
        "DMLC_NUM_SERVER": str(num_servers),
        "DMLC_NUM_WORKER": str(num_workers),
        "DMLC_TASK_ID": str(node.index),
    }
    if node.host is not None and node.role != "scheduler":
        try:  # ps-lite binds to this address, so it must be an IP, not a host name
            env["DMLC_NODE_HOST"] = socket.gethostbyname(node.host)
        except OSError:
            pass  # ps-lite then picks the host's own address
    env.update(extra or {})
    return env


def ssh_command(host, port, env, command, workdir):
    """argv that runs ``command`` on ``host`` in ``workdir`` with ``env`` exported.

    The remote shell starts the command in the background and ends it when the ssh
    connection's stdin closes, so tearing down the local ssh client also stops the
    remote process instead of leaving it to wait on ps-lite forever.
    """
    exports = " ".join("%s=%s" % (key, shlex.quote(str(value))) for key, value in sorted(env.items()))
    script = ("cd %s || exit 1\n"
              "export %s\n"
              "exec 3<&0\n"
              "%s </dev/null &\n"
              "child=$!\n"
              "{ while read -r -u 3 _; do :; done; kill -TERM $child 2>/dev/null; } >/dev/null 2>&1 &\n"
              "watcher=$!\n"
              "wait $child\n"
              "status=$?\n"
              "kill $watcher 2>/dev/null\n"
              "exit $status\n") % (shlex.quote(workdir), exports, shlex.join(command))
    return ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes", "-p", str(port),
            host, "bash -c %s" % shlex.quote(script)]


def rsync_command(host, port, source, destination):
    """argv that copies ``source`` (a folder) into ``destination`` on ``host``; never deletes."""
    return ["rsync", "-az", "-e", "ssh -o StrictHostKeyChecking=no -o BatchMode=yes -p %d" % port,
            source.rstrip("/") + "/", "%s:%s/" % (host, destination.rstrip("/"))]


def _parse_pairs(values, option):
    pairs = {}
    for value in values:
        sep = "=" if "=" in value else ":"
        key, found, val = value.partition(sep)
        if not found or not key:
            raise JobFailed("%s expects NAME=VALUE (or NAME:VALUE), got %r" % (option, value), 2)
        pairs[key] = val
    return pairs


def parse_gpu_ids(text, option="--gpus"):
    """``"0,1,3"`` -> ``[0, 1, 3]``; ``JobFailed`` (exit 2) for anything else."""
    items = [item.strip() for item in str(text).split(",")]
    if not items or not all(item.isdigit() for item in items):
        raise JobFailed("%s %r is malformed: use comma-separated GPU ids, e.g. %s 0,1,2,3"
                        % (option, text, option), 2)
    ids = [int(item) for item in items]
    if len(set(ids)) != len(ids):
        raise JobFailed("%s %r lists a GPU twice" % (option, text), 2)
    return ids


def _workers_on(nodes, host):
    return [n for n in nodes if n.role == "worker" and n.host == host]


def split_gpus(nodes, gpus=None, per_worker=None):
    """``{worker index: [GPU ids]}``: each worker of a host gets its own consecutive GPUs.

    ``gpus`` (a list of ids on every host) is split evenly between the workers of a host,
    or ``per_worker`` at a time; ``per_worker`` alone takes GPUs ``0 .. W*per_worker-1`` of
    a host with W workers.  Neither: ``{}`` (every worker sees every GPU, as before).
    """
    if gpus is None and per_worker is None:
        return {}
    if per_worker is not None and per_worker < 1:
        raise JobFailed("--gpus-per-worker must be at least 1, got %d" % per_worker, 2)
    assigned = {}
    for host in sorted({n.host for n in nodes if n.role == "worker"}, key=str):
        workers = _workers_on(nodes, host)
        where = "this machine" if host is None else host
        if per_worker is None and len(gpus) % len(workers):
            raise JobFailed("--gpus lists %d GPU(s) for the %d workers on %s: give a multiple "
                            "of %d, or --gpus-per-worker" % (len(gpus), len(workers), where,
                                                             len(workers)), 2)
        k = per_worker or len(gpus) // len(workers)
        pool = list(range(k * len(workers))) if gpus is None else list(gpus)
        if len(pool) < k * len(workers):
            raise JobFailed("%d workers on %s with %d GPU(s) each need %d GPUs, --gpus lists %d"
                            % (len(workers), where, k, k * len(workers), len(pool)), 2)
        for i, node in enumerate(workers):
            assigned[node.index] = pool[i * k:(i + 1) * k]
    return assigned


def _visible(ids, node):
    """CUDA_VISIBLE_DEVICES for ``ids``, read through this shell's own CUDA_VISIBLE_DEVICES
    for local nodes (``--gpus 0`` under CUDA_VISIBLE_DEVICES=2,3 is physical GPU 2)."""
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    if node.host is not None or parent is None or not parent.strip():
        return ",".join(str(i) for i in ids)
    visible = [item.strip() for item in parent.split(",") if item.strip()]
    if max(ids) >= len(visible):
        raise JobFailed("GPU %d asked for, but CUDA_VISIBLE_DEVICES=%s shows only %d GPU(s)"
                        % (max(ids), parent, len(visible)), 2)
    return ",".join(visible[i] for i in ids)


def _rewrite_gpus(command, count):
    """``command`` with its ``--gpus`` value replaced by ``0,...,count-1``; (argv, found)."""
    argv, found, local = list(command), False, ",".join(str(i) for i in range(count))
    for i, arg in enumerate(argv):
        if arg == "--gpus" and i + 1 < len(argv):
            argv[i + 1], found = local, True
        elif arg.startswith("--gpus="):
            argv[i], found = "--gpus=" + local, True
    return argv, found


def node_command(node, command, assigned, host_workers):
    """``(argv, env defaults)`` for ``node``.

    A worker with assigned GPUs gets ``CUDA_VISIBLE_DEVICES`` set to them and its
    ``--gpus`` flag (if the command has one) renumbered ``0..k-1``: MXNet numbers the visible
    devices from 0, so ``mx.gpu(0)`` is the worker's first own GPU.  Threads: a worker
    gets its share of this host's cores (:func:`mxcnn.common.runtime.omp_threads`, physical cores,
    cgroup quota, GPU reserve); locally as OMP_NUM_THREADS, remotely as
    ``MXCNN_WORKERS_PER_HOST`` for the trainer's ``runtime.configure()`` to apply there.
    Servers and the scheduler get one thread.  The user's own values win (run_job).
    """
    if node.role != "worker":
        return list(command), {"OMP_NUM_THREADS": "1"}
    argv, env = list(command), {runtime.WORKERS_PER_HOST_ENV: str(max(1, len(host_workers)))}
    ids = assigned.get(node.index)
    if ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = _visible(ids, node)
        argv, _ = _rewrite_gpus(command, len(ids))
    if node.host is None:
        uses_gpu = bool(ids) or runtime.argv_uses_gpu(command)
        env["OMP_NUM_THREADS"] = str(runtime.omp_threads(common.usable_cores(physical=True),
                                                         uses_gpu, len(host_workers)))
    return argv, env


def _warn_shared_gpus(job, nodes, command, assigned):
    """Say how the GPUs are shared: unsplit ``--gpus`` on co-located workers, or a split
    with no ``--gpus`` flag in the command to renumber."""
    if assigned:
        if not _rewrite_gpus(command, 1)[1]:
            job.say("the command has no --gpus flag: each worker sees only its own GPUs "
                    "(CUDA_VISIBLE_DEVICES), numbered from 0")
        return
    if not runtime.argv_uses_gpu(command):
        return
    hosts = {n.host for n in nodes if n.role == "worker"}
    crowded = sorted((h for h in hosts if len(_workers_on(nodes, h)) > 1), key=str)
    if crowded:
        job.say("every worker on %s uses all the command's --gpus; give --gpus-per-worker K "
                "(or --gpus LIST to split them) so that each gets its own"
                % ", ".join("this machine" if h is None else h for h in crowded))


def run_job(command, num_workers, num_servers=None, launcher="local", hostfile=None,
            sync_dst_dir=None, env_server=(), env_worker=(), env=(), host_ip=None,
            timeout=None, shutdown_grace=SHUTDOWN_GRACE, stdout=None, stderr=None,
            gpus=None, gpus_per_worker=None, traceback_grace=TRACEBACK_GRACE):
    """Run ``command`` (argv list) as a ps-lite job; return 0 or raise ``JobFailed``.

    ``env_server``/``env_worker`` are ``NAME=VALUE`` strings for that role only; ``env``
    names variables of this shell to pass to remote nodes (local nodes inherit everything).
    ``gpus`` (ids) / ``gpus_per_worker`` give each worker of a host its own GPUs
    (:func:`split_gpus`, :func:`node_command`).
    """
    num_servers = _check_job(command, num_workers, num_servers, launcher)
    role_env = {"server": _parse_pairs(env_server, "--env-server"),
                "worker": _parse_pairs(env_worker, "--env-worker")}
    role_env["scheduler"] = role_env["server"]
    missing = [name for name in env if name not in os.environ]
    if missing:
        raise JobFailed("--env names variable(s) not set in this shell: %s" % ", ".join(missing), 2)
    passed = {name: os.environ[name] for name in env}
    hosts, root_uri = _root_address(launcher, hostfile, host_ip)
    root_port = free_port("0.0.0.0" if launcher == "ssh" else root_uri)
    workdir = sync_dst_dir or os.getcwd()
    if sync_dst_dir and launcher == "ssh":
        _sync_checkout(hosts, sync_dst_dir)
    nodes = plan_nodes(num_workers, num_servers, hosts)
    assigned = split_gpus(nodes, gpus, gpus_per_worker)
    job = Job(nodes, stdout, stderr)
    _warn_shared_gpus(job, nodes, command, assigned)
    try:
        for node in nodes:
            dmlc = node_env(node, root_uri, root_port, num_workers, num_servers,
                            dict(role_env[node.role]))
            argv, node_vars = node_command(node, command, assigned, _workers_on(nodes, node.host))
            _start_node(job, node, argv, node_vars, dmlc, passed, workdir)
    except OSError as exc:
        job.terminate()
        raise JobFailed("cannot start %r: %s" % (command[0], exc.strerror), 2)
    except BaseException:
        job.terminate()
        raise
    return job.supervise(timeout=timeout, shutdown_grace=shutdown_grace,
                         traceback_grace=traceback_grace)


def _check_job(command, num_workers, num_servers, launcher):
    """The number of servers (default: one per worker); ``JobFailed`` (exit 2) for bad flags."""
    if not command:
        raise JobFailed("no command to launch; put it after '--', e.g. "
                        "-- python train/train_cifar.py --kv-store dist_sync", 2)
    if num_workers < 1:
        raise JobFailed("-n/--num-workers must be at least 1, got %d" % num_workers, 2)
    num_servers = num_workers if num_servers is None else num_servers
    if num_servers < 1:
        raise JobFailed("-s/--num-servers must be at least 1, got %d" % num_servers, 2)
    if launcher not in ("local", "ssh"):
        raise JobFailed("--launcher must be 'local' or 'ssh', got %r" % (launcher,), 2)
    return num_servers


def _root_address(launcher, hostfile, host_ip):
    """``(hosts, scheduler address)``: the hostfile's hosts with ssh, None and loopback locally."""
    if launcher == "ssh":
        if not hostfile:
            raise JobFailed("--launcher ssh needs -H/--hostfile (one host or host:port a line)", 2)
        hosts = read_hostfile(hostfile)
        return hosts, host_ip or reachable_ip(hosts[0][0])
    if hostfile:
        raise JobFailed("-H/--hostfile is only used with --launcher ssh", 2)
    return None, host_ip or "127.0.0.1"


def _sync_checkout(hosts, sync_dst_dir):
    """rsync this directory to ``sync_dst_dir`` on every host; ``JobFailed`` if one fails."""
    for host, port in sorted(set(hosts)):
        result = subprocess.run(rsync_command(host, port, os.getcwd(), sync_dst_dir))
        if result.returncode != 0:
            raise JobFailed("rsync of %s to %s:%s failed (%s)"
                            % (os.getcwd(), host, sync_dst_dir, describe(result.returncode)))


def _start_node(job, node, argv, node_vars, dmlc, passed, workdir):
    """Start one node: locally with this environment (the node's own variables win only
    where unset here, but ``CUDA_VISIBLE_DEVICES`` always), or over ssh with ``passed``."""
    if node.host is None:  # the scheduler always, everything with --launcher local
        child_env = dict(os.environ)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        for key, value in node_vars.items():
            if key not in os.environ or key == "CUDA_VISIBLE_DEVICES":
                child_env[key] = value
        child_env.update(dmlc)
        job.start(node, argv, child_env)
    else:
        remote = dict(node_vars, **passed)
        remote.update(PYTHONUNBUFFERED="1", **dmlc)
        job.start(node, ssh_command(node.host, node.port, remote, argv, workdir), None)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mxcnn-launch",
        description="Run a command as an MXNet parameter-server job (scheduler, servers, "
                    "workers), locally or over ssh, and stop the whole job if any node fails.",
        epilog="example: %(prog)s -n 2 -s 1 -- python train/train_cifar.py --kv-store dist_sync")
    parser.add_argument("-n", "--num-workers", type=int, required=True, help="number of workers")
    parser.add_argument("-s", "--num-servers", type=int,
                        help="number of servers (default: the number of workers)")
    parser.add_argument("--launcher", choices=["local", "ssh"], default="local",
                        help="start the nodes on this machine or over ssh (default: local)")
    parser.add_argument("-H", "--hostfile", help="ssh: file with one host or host:port per line")
    parser.add_argument("--sync-dst-dir",
                        help="ssh: rsync the current folder to this folder on every host first "
                             "and run there (nothing is deleted on the hosts)")
    parser.add_argument("--host-ip", help="address the nodes use to reach the scheduler (default: "
                                          "127.0.0.1 locally, the route to the first host over ssh)")
    parser.add_argument("--env-server", action="append", default=[], metavar="NAME=VALUE",
                        help="set a variable for servers and the scheduler (repeatable)")
    parser.add_argument("--env-worker", action="append", default=[], metavar="NAME=VALUE",
                        help="set a variable for workers (repeatable)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME",
                        help="ssh: pass this shell's value of NAME to every node (repeatable)")
    parser.add_argument("--gpus", help="GPU ids of each host to split between its workers, "
                                       "e.g. 0,1,2,3 (each worker sees its own as 0..k-1)")
    parser.add_argument("--gpus-per-worker", type=int, metavar="K",
                        help="give each worker K GPUs of its host (from --gpus, else 0,1,...): "
                             "CUDA_VISIBLE_DEVICES per worker, its --gpus renumbered 0..K-1")
    parser.add_argument("--timeout", type=float,
                        help="stop the job (exit 124) if it runs longer than this many seconds "
                             "(default: none; a failing node or --traceback-grace ends it)")
    parser.add_argument("--traceback-grace", type=float, default=TRACEBACK_GRACE,
                        help="stop the job when a worker is still running this many seconds "
                             "after printing a Python traceback (0: never; default: %(default)s)")
    parser.add_argument("--shutdown-grace", type=float, default=SHUTDOWN_GRACE,
                        help="seconds servers/scheduler get to exit after the workers finished "
                             "(default: %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command every node runs, after '--'")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    def stop(signum, _frame):
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        gpus = parse_gpu_ids(args.gpus) if args.gpus else None
        return run_job(command, args.num_workers, args.num_servers, args.launcher,
                       args.hostfile, args.sync_dst_dir, args.env_server, args.env_worker,
                       args.env, args.host_ip, args.timeout, args.shutdown_grace,
                       gpus=gpus, gpus_per_worker=args.gpus_per_worker,
                       traceback_grace=args.traceback_grace)
    except JobFailed as exc:
        sys.stderr.write("mxcnn-launch: %s\n" % exc)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        sys.stderr.write("mxcnn-launch: interrupted (%s); the job was stopped\n"
                         % signal.Signals(signum).name)
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
