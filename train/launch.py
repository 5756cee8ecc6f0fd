"""Start and supervise an MXNet parameter-server job: one scheduler, S servers, W workers.

MXNet's distributed kvstores (``dist_sync``, ``dist_async``, ...) run on ps-lite, which is
built into libmxnet.  Every node runs the *same* command; the ``DMLC_*`` environment tells
it its role.  In the scheduler and server roles ``import mxnet`` runs the ps-lite loop and
exits when the workers finish, so the training script itself needs nothing special::

    python train/launch.py -n 2 -s 1 -- python train/train_cifar.py --kv-store dist_sync ...
    python train/launch.py -n 4 -s 2 --launcher ssh -H hosts.txt --sync-dst-dir /tmp/job -- \\
        python train/train_cifar.py --kv-store dist_sync ...

This replaces ``mxnet/tools/launch.py`` (whose tracker crashes on Python 3.9+) and adds the
supervision ps-lite lacks: a node that exits non-zero or dies makes the peers wait forever,
so the launcher ends the whole job (every process group) and exits non-zero.  Output of
every node is forwarded line by line with a ``[role index]`` prefix.  The index is the
launch order; ps-lite assigns ``kv.rank`` itself, and the trainer shards data by
``kv.rank`` / ``kv.num_workers``.

Exit status: 0 when every worker exited 0; otherwise the failing node's status (128+signal
for a node killed by a signal), 124 on ``--timeout``, 130/143 on Ctrl-C/SIGTERM, 2 for bad
arguments.
"""
import os
import sys

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import train  # noqa: F401
    __package__ = "train"

import argparse
import shlex
import signal
import socket
import subprocess
import threading
import time

__all__ = ["Node", "JobFailed", "plan_nodes", "node_env", "ssh_command", "read_hostfile",
           "free_port", "run_job", "main"]

#: Seconds given to servers and scheduler to shut down after the last worker exited 0.
SHUTDOWN_GRACE = 30.0
#: Seconds between SIGTERM and SIGKILL when the job is torn down.
KILL_GRACE = 5.0
POLL_INTERVAL = 0.1


class JobFailed(Exception):
    """The distributed job could not start or a node failed; ``exit_code`` says how."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


class Node:
    """One process of the job: its role (scheduler/server/worker), index and host."""

    def __init__(self, role, index, host=None, port=22):
        self.role, self.index, self.host, self.port = role, index, host, port
        self.proc = None
        self.returncode = None
        self.readers = []

    @property
    def label(self):
        return self.role if self.role == "scheduler" else "%s %d" % (self.role, self.index)

    def __repr__(self):
        where = "" if self.host is None else "@%s" % self.host
        return "<Node %s%s>" % (self.label, where)


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


def _set_parent_death_signal():
    """Linux: the child gets SIGKILL if the launcher itself is killed (no orphans)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _forward(stream, sink, prefix, lock):
    """Copy ``stream`` to ``sink`` line by line, each line prefixed."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        if not line.endswith("\n"):
            line += "\n"
        with lock:
            sink.write(prefix + line)
            sink.flush()
    stream.close()


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _describe(code):
    return "killed by %s" % signal.Signals(-code).name if code < 0 else "exit status %d" % code


def _status(code):
    return 128 - code if code < 0 else code


class Job:
    """The running processes of one job, their output forwarding and their teardown."""

    def __init__(self, nodes, stdout=None, stderr=None):
        self.nodes = nodes
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.lock = threading.Lock()

    def start(self, node, argv, env):
        node.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE if node.host else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None)
        prefix = "[%s] " % node.label
        for stream, sink in ((node.proc.stdout, self.stdout), (node.proc.stderr, self.stderr)):
            reader = threading.Thread(target=_forward, args=(stream, sink, prefix, self.lock),
                                      daemon=True)
            reader.start()
            node.readers.append(reader)

    def say(self, message):
        with self.lock:
            self.stderr.write("[launch] %s\n" % message)
            self.stderr.flush()

    def running(self):
        return [n for n in self.nodes if n.proc is not None and n.returncode is None]

    def poll(self):
        """Nodes that ended since the last call."""
        ended = []
        for node in self.running():
            code = node.proc.poll()
            if code is not None:
                node.returncode = code
                ended.append(node)
        return ended

    def terminate(self, grace=KILL_GRACE):
        """SIGTERM every live process group, SIGKILL what is left after ``grace`` seconds."""
        live = self.running()
        for node in live:
            _signal_group(node.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            self.poll()
            time.sleep(POLL_INTERVAL)
        for node in self.running():
            _signal_group(node.proc, signal.SIGKILL)
        for node in live:
            try:
                node.returncode = node.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Processes of a group may still hold the pipes for a moment; never wait for long.
        for node in self.nodes:
            for reader in node.readers:
                reader.join(timeout=1.0)
            if node.proc is not None and node.proc.stdin:
                try:
                    node.proc.stdin.close()
                except OSError:
                    pass

    def supervise(self, timeout=None, shutdown_grace=SHUTDOWN_GRACE):
        """Wait for the workers; return 0, or raise ``JobFailed`` after tearing everything down."""
        started = time.monotonic()
        workers = [n for n in self.nodes if n.role == "worker"]
        service_done_at = None  # first time a server/scheduler exited 0 with workers running
        try:
            while True:
                for node in self.poll():
                    if node.returncode != 0:
                        raise JobFailed("%s failed (%s); stopping the job"
                                        % (node.label, _describe(node.returncode)),
                                        _status(node.returncode) or 1)
                    if node.role != "worker" and service_done_at is None:
                        service_done_at = time.monotonic()
                now = time.monotonic()
                if all(w.returncode == 0 for w in workers):
                    break
                if service_done_at is not None and now - service_done_at > shutdown_grace:
                    raise JobFailed("a server/scheduler finished but workers are still running "
                                    "after %.0f s; stopping the job" % shutdown_grace)
                if timeout is not None and now - started > timeout:
                    raise JobFailed("job still running after --timeout %g s; stopping it" % timeout, 124)
                time.sleep(POLL_INTERVAL)
            deadline = time.monotonic() + shutdown_grace
            while self.running() and time.monotonic() < deadline:
                for node in self.poll():
                    if node.returncode != 0:
                        self.say("%s ended with %s after the workers finished"
                                 % (node.label, _describe(node.returncode)))
                time.sleep(POLL_INTERVAL)
            if self.running():
                self.say("servers/scheduler still running %.0f s after the workers finished; "
                         "stopping them" % shutdown_grace)
            return 0
        finally:
            self.terminate()


def _parse_pairs(values, option):
    pairs = {}
    for value in values:
        sep = "=" if "=" in value else ":"
        key, found, val = value.partition(sep)
        if not found or not key:
            raise JobFailed("%s expects NAME=VALUE (or NAME:VALUE), got %r" % (option, value), 2)
        pairs[key] = val
    return pairs


def run_job(command, num_workers, num_servers=None, launcher="local", hostfile=None,
            sync_dst_dir=None, env_server=(), env_worker=(), env=(), host_ip=None,
            timeout=None, shutdown_grace=SHUTDOWN_GRACE, stdout=None, stderr=None):
    """Run ``command`` (argv list) as a ps-lite job; return 0 or raise ``JobFailed``.

    ``env_server``/``env_worker`` are ``NAME=VALUE`` strings for that role only; ``env``
    names variables of this shell to pass to remote nodes (local nodes inherit everything).
    """
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
    role_env = {"server": _parse_pairs(env_server, "--env-server"),
                "worker": _parse_pairs(env_worker, "--env-worker")}
    role_env["scheduler"] = role_env["server"]
    missing = [name for name in env if name not in os.environ]
    if missing:
        raise JobFailed("--env names variable(s) not set in this shell: %s" % ", ".join(missing), 2)
    passed = {name: os.environ[name] for name in env}

    hosts = None
    if launcher == "ssh":
        if not hostfile:
            raise JobFailed("--launcher ssh needs -H/--hostfile (one host or host:port a line)", 2)
        hosts = read_hostfile(hostfile)
        root_uri = host_ip or reachable_ip(hosts[0][0])
    else:
        if hostfile:
            raise JobFailed("-H/--hostfile is only used with --launcher ssh", 2)
        root_uri = host_ip or "127.0.0.1"
    root_port = free_port("0.0.0.0" if launcher == "ssh" else root_uri)

    workdir = sync_dst_dir or os.getcwd()
    if sync_dst_dir and launcher == "ssh":
        for host, port in sorted(set(hosts)):
            result = subprocess.run(rsync_command(host, port, os.getcwd(), sync_dst_dir))
            if result.returncode != 0:
                raise JobFailed("rsync of %s to %s:%s failed (%s)"
                                % (os.getcwd(), host, sync_dst_dir, _describe(result.returncode)))

    nodes = plan_nodes(num_workers, num_servers, hosts)
    job = Job(nodes, stdout, stderr)
    try:
        for node in nodes:
            extra = dict(role_env[node.role])
            dmlc = node_env(node, root_uri, root_port, num_workers, num_servers, extra)
            if node.host is None:  # the scheduler always, everything with --launcher local
                child_env = dict(os.environ)
                child_env.setdefault("PYTHONUNBUFFERED", "1")
                if launcher == "local" and "OMP_NUM_THREADS" not in os.environ and not \
                        {"OMP_NUM_THREADS"} & set(extra):
                    # Nodes share this machine's cores: split them between the workers.
                    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                        else (os.cpu_count() or 1)
                    share = max(1, cores // num_workers) if node.role == "worker" else 1
                    child_env["OMP_NUM_THREADS"] = str(share)
                child_env.update(dmlc)
                job.start(node, list(command), child_env)
            else:
                remote = dict(passed, PYTHONUNBUFFERED="1", **dmlc)
                job.start(node, ssh_command(node.host, node.port, remote, command, workdir), None)
    except OSError as exc:
        job.terminate()
        raise JobFailed("cannot start %r: %s" % (command[0], exc.strerror), 2)
    except BaseException:
        job.terminate()
        raise
    return job.supervise(timeout=timeout, shutdown_grace=shutdown_grace)


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
    parser.add_argument("--host-ip", help="address the nodes use to reach the scheduler "
                                          "(default: 127.0.0.1 locally, the route to the first host over ssh)")
    parser.add_argument("--env-server", action="append", default=[], metavar="NAME=VALUE",
                        help="set a variable for servers and the scheduler (repeatable)")
    parser.add_argument("--env-worker", action="append", default=[], metavar="NAME=VALUE",
                        help="set a variable for workers (repeatable)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME",
                        help="ssh: pass this shell's value of NAME to every node (repeatable)")
    parser.add_argument("--timeout", type=float,
                        help="stop the job (exit 124) if it runs longer than this many seconds")
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
        return run_job(command, args.num_workers, args.num_servers, args.launcher,
                       args.hostfile, args.sync_dst_dir, args.env_server, args.env_worker,
                       args.env, args.host_ip, args.timeout, args.shutdown_grace)
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
