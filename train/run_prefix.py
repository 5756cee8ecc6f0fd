"""A run owns its ``--model-prefix``: who may write there, and what goes first.

``lock_prefix(job)`` (``job.prepare``; a dist job's rank 0 once it knows its rank) holds an
exclusive ``flock`` on ``PREFIX.lock`` for the whole run, so two runs on one prefix never
overlap, whatever their timing; ``unlock`` drops it.  ``check_ownership(job)`` (called after
the lock, before anything is bound) refuses a new
run where another run's checkpoints or log are, and ``--load-epoch N`` below complete later
checkpoints, unless ``--overwrite``; it marks what is to be removed.  ``clear_prefix`` (rank
0, just before training) removes it -- each epoch's ``.json`` first, so an interrupted
removal never leaves a complete-looking mix -- together with the temporary files of killed
writers.  ``check_writable`` proves a path's folder can be made and written without making
it.  Every refusal is an ``options.UsageError``: one line, exit 2.
"""
import contextlib
import os
import tempfile
from typing import Any

from mxcnn import common
from mxcnn.common import files
from mxcnn.inference import checkpoint as ckpt
from mxcnn.train.options import UsageError

__all__ = ["lock_prefix", "unlock", "check_ownership", "clear_prefix", "check_writable"]


def lock_prefix(job: Any) -> None:
    """Hold ``PREFIX.lock`` (``common.files.PathLock``) in ``job.prefix_lock`` until
    :func:`unlock` or the end of the process; make the prefix's folder for it (what was
    made is listed in ``job.made_dirs``).  UsageError with the choices when another run
    holds it.  A killed run's lock is released by the kernel: it never blocks."""
    folder = os.path.dirname(os.path.abspath(job.prefix))
    job.made_dirs = _make_dirs(folder)
    lock = files.PathLock(job.prefix + ".lock")
    try:
        taken = lock.acquire()
    except OSError as err:
        unlock(job, refused=True)
        raise UsageError("--model-prefix %s: cannot create its lock file %s (%s); choose a folder "
                         "you can write" % (job.prefix, lock.path, err.strerror or err)) from None
    if not taken:
        pid = lock.holder()
        unlock(job, refused=True)
        raise UsageError("--model-prefix %s is in use by another training run (%s holds %s); wait "
                         "for it to finish, choose another --model-prefix, or stop that run"
                         % (job.prefix, "process %d" % pid if pid else "another process", lock.path))
    job.prefix_lock = lock


def unlock(job: Any, refused: bool = False) -> None:
    """Release ``job.prefix_lock`` (removing the lock file); with ``refused`` also remove the
    folders :func:`lock_prefix` made, when they are still empty."""
    lock = getattr(job, "prefix_lock", None)
    if lock is not None:
        lock.release()
        job.prefix_lock = None
    if refused:
        for folder in reversed(getattr(job, "made_dirs", [])):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        job.made_dirs = []


def _make_dirs(folder):
    """``os.makedirs(folder)``; the folders it made, outermost first."""
    missing = []
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    made = []
    for path in reversed(missing):
        try:
            os.mkdir(path)
            made.append(path)
        except FileExistsError:  # another run made it at the same moment
            pass
    return made


def check_ownership(job):
    """A run owns its --model-prefix.  A new run where another run's checkpoints or log are
    refuses unless ``--overwrite``; so does ``--load-epoch N`` below complete checkpoints of
    later epochs (it would rewrite them).  What is to go (with ``--overwrite``, and the
    uncommitted epochs a killed save left after the resume point) is removed by
    :func:`clear_prefix` just before training: the old run whole, never mixed with the new."""
    from mxcnn.train.progress import EpochLog
    args, prefix, start = job.args, job.prefix, job.begin_epoch
    if args.benchmark:
        return
    later = [e for e in ckpt.saved_epochs(prefix) if e > start]
    committed = [e for e in later if os.path.exists(ckpt.checkpoint_paths(prefix, e)["state"])]
    log = EpochLog(prefix)
    if not start:
        logged = _logged_epochs(log.path)
        if (later or logged) and not args.overwrite:
            resume = "--resume" if committed else "--load-epoch N" if ckpt.list_epochs(prefix) else None
            choices = (["continue it with " + resume] if resume else []) + [
                "choose another --model-prefix", "pass --overwrite to replace it"]
            raise UsageError("--model-prefix %s holds another run (%s); %s, or %s"
                             % (prefix, _describe_run(prefix, later, logged),
                                ", ".join(choices[:-1]), choices[-1]))
        paths = ckpt.checkpoint_paths(prefix, 0)
        job.discard_files = [paths["symbol"], paths["inference_symbol"], log.path, log.png]
    elif committed and not args.overwrite:
        raise UsageError("checkpoint(s) %s of the run under --model-prefix %s come after epoch %d, "
                         "and continuing from %d would rewrite them; pass --overwrite to discard "
                         "them, or --resume to continue from %d"
                         % (_ranges(committed), prefix, start, start, committed[-1]))
    job.discard_epochs = later


def _logged_epochs(path):
    """Epoch records in a ``-log.jsonl`` (0 when missing or unreadable: nothing to keep)."""
    try:
        with open(path) as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, UnicodeDecodeError):
        return 0


def _describe_run(prefix, epochs, logged):
    """"resnet-20, checkpoints 1-3, 3 logged epochs" for the refusal message."""
    parts = []
    committed = [e for e in epochs if os.path.exists(ckpt.checkpoint_paths(prefix, e)["state"])]
    if committed:
        try:
            state = ckpt.load_state(prefix, committed[-1])
            parts.append("%s-%s" % (state.get("network", "?"), state.get("num_layers", "?")))
        except ckpt.CheckpointError:
            pass
    if epochs:
        parts.append("checkpoint files of epoch(s) %s" % _ranges(epochs))
    if logged:
        parts.append("%d logged epoch(s) in %s-log.jsonl" % (logged, os.path.basename(prefix)))
    return ", ".join(parts)


def _ranges(numbers):
    """[1, 2, 3, 5] -> "1-3, 5"."""
    out, numbers = [], sorted(numbers)
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join("%d" % a if a == b else "%d-%d" % (a, b) for a, b in out)


def clear_prefix(job, logger):
    """Remove what :func:`check_ownership` marked (rank 0, just before training) and the
    temporary files killed writers left under the prefix; log what went."""
    temps = ckpt.temp_files(job.prefix)
    removed = ckpt.remove_files(job.prefix, job.discard_epochs, job.discard_files + temps)
    gone = [p for p in removed if p not in temps]
    if gone:
        logger.info("%s: removed %d file(s) under --model-prefix %s (epochs %s)",
                    "--overwrite" if job.args.overwrite else "leftovers of an interrupted save",
                    len(gone), job.prefix, _ranges(job.discard_epochs) or "none")
    if temps:
        logger.info("removed %d temporary file(s) a killed writer left: %s", len(temps),
                    ", ".join(os.path.basename(p) for p in temps))


def check_writable(path, flag):
    """The folder of ``path`` is a folder, or can be made as one, where files can be created."""
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError("%s %s: %s is a file, not a folder; choose another %s"
                         % (flag, path, existing, flag))
    try:  # in the deepest folder that exists: nothing is made before every check has passed
        fd, probe = tempfile.mkstemp(prefix=".%s-write-test." % os.path.basename(path),
                                     suffix=common.TMP_SUFFIX, dir=existing)
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):  # the run that holds the prefix cleaned it
            os.remove(probe)
    except OSError as err:
        raise UsageError("%s %s: cannot write to the folder %s (%s); choose a folder you can write"
                         % (flag, path, existing, err.strerror or err))
