"""The processes of one launcher job: start them, forward their output, supervise, tear down.

``Job.supervise`` ends the whole job (every process group: SIGTERM, then SIGKILL) and raises
``JobFailed`` when a node exits non-zero or dies, when a worker is still running
``TRACEBACK_GRACE`` seconds after printing a Python traceback, or on ``--timeout``; used by
distributed/launch.py, which plans the nodes and their environment.
"""
import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["JobFailed", "Node", "Job", "SHUTDOWN_GRACE", "KILL_GRACE", "TRACEBACK_GRACE",
           "TRACEBACK_LINE", "POLL_INTERVAL", "describe"]

#: Seconds given to servers and scheduler to shut down after the last worker exited 0.
SHUTDOWN_GRACE = 30.0
#: Seconds between SIGTERM and SIGKILL when the job is torn down.
KILL_GRACE = 5.0
#: Seconds a worker may live on after printing a Python traceback.  A worker that raises in
#: a dist_* job does not exit by itself: MXNet's KVStoreDist destructor waits for the
#: pending pushes and in a Barrier() that the peers never reach, while the peers wait in
#: pushpull for its gradients.  The launcher ends the job this long after the traceback.
TRACEBACK_GRACE = 60.0
TRACEBACK_LINE = "Traceback (most recent call last):"
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
        self.traceback_at = None  # time.monotonic() of the first traceback line it printed

    @property
    def label(self):
        return self.role if self.role == "scheduler" else "%s %d" % (self.role, self.index)

    def __repr__(self):
        where = "" if self.host is None else "@%s" % self.host
        return "<Node %s%s>" % (self.label, where)


def _set_parent_death_signal():
    """Linux: the child gets SIGKILL if the launcher itself is killed (no orphans)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _forward(stream, sink, prefix, lock, node=None):
    """Copy ``stream`` to ``sink`` line by line, each line prefixed; note ``node``'s first
    traceback line."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        if not line.endswith("\n"):
            line += "\n"
        if node is not None and node.traceback_at is None and TRACEBACK_LINE in line:
            node.traceback_at = time.monotonic()
        with lock:
            sink.write(prefix + line)
            sink.flush()
    stream.close()


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def describe(code):
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
            reader = threading.Thread(target=_forward, daemon=True,
                                      args=(stream, sink, prefix, self.lock, node))
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

    def check_tracebacks(self, grace, now):
        """Raise ``JobFailed`` for a worker still running ``grace`` s after its traceback."""
        for node in self.running():
            if node.role == "worker" and node.traceback_at is not None \
                    and now - node.traceback_at > grace:
                raise JobFailed("%s printed a traceback and is still running %.0f s later (a "
                                "dist kvstore waits for its peers after an exception); stopping "
                                "the job" % (node.label, grace))

    def supervise(self, timeout=None, shutdown_grace=SHUTDOWN_GRACE,
                  traceback_grace=TRACEBACK_GRACE):
        """Wait for the workers; return 0, or raise ``JobFailed`` after tearing everything down."""
        started = time.monotonic()
        workers = [n for n in self.nodes if n.role == "worker"]
        service_done_at = None  # first time a server/scheduler exited 0 with workers running
        try:
            while True:
                for node in self.poll():
                    if node.returncode != 0:
                        raise JobFailed("%s failed (%s); stopping the job"
                                        % (node.label, describe(node.returncode)),
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
                if traceback_grace:
                    self.check_tracebacks(traceback_grace, now)
                time.sleep(POLL_INTERVAL)
            deadline = time.monotonic() + shutdown_grace
            while self.running() and time.monotonic() < deadline:
                for node in self.poll():
                    if node.returncode != 0:
                        self.say("%s ended with %s after the workers finished"
                                 % (node.label, describe(node.returncode)))
                time.sleep(POLL_INTERVAL)
            if self.running():
                self.say("servers/scheduler still running %.0f s after the workers finished; "
                         "stopping them" % shutdown_grace)
            return 0
        finally:
            self.terminate()
