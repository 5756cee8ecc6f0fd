"""Checkpoint files in MXNet's layout, written atomically, plus the training state for exact resume.

For a prefix ``runs/r20`` and N = the number of epochs COMPLETED (MXNet's convention:
``r20-0003.params`` is saved after the 3rd epoch, and ``--load-epoch 3`` continues with the
4th)::

    r20-symbol.json   the training symbol (SoftmaxOutput head(s), as built)
    r20-inference-symbol.json   data -> probabilities (softmax heads, no label input)
    r20-0003.params   'arg:<name>' / 'aux:<name>' arrays     -> mx.model.load_checkpoint
    r20-0003.states   optimizer state (momentum, ...) of the engine that wrote it
    r20-0003.live     with --ema-decay only: the live training weights ('arg:'/'aux:' as in
                      .params, which then holds the averaged weights to use; train/ema.py)
    r20-0003.slow     with --lookahead-every only: the lookahead's slow weights (train/lookahead.py)
    r20-0003.json     training state: epoch, num_update, lr, best metric, seeds, engine, and
                      ``preprocess`` (mean/std, image shape, class names: inference/predict.py)

Loading elsewhere: ``mx.model.load_checkpoint('runs/r20', 3)`` (the training symbol), or in
Gluon ``SymbolBlock.imports('runs/r20-inference-symbol.json', ['data'], 'runs/r20-0003.params')``
(a plain ``data -> probabilities`` network; the training symbol would also want
``softmax_label``).  A deep-supervision symbol is saved whole (all heads); output 0 is the
main head, in both symbol files.
The ``.states`` file holds the optimizer state by parameter name, on the CPU
(``mxcnn.train.opt_states``): it reloads onto either engine and any device layout;
``.params`` work everywhere.

Each file is written under a temporary name in the same folder and moved into place with
``os.replace``, so a crash never leaves a half-written file under a real name.  An epoch's
files are one unit whose commit record is the ``.json``: written last, it lists the size and
SHA-256 of every other file of the epoch (``files``); re-saving an epoch removes the old
``.json`` first.  So a checkpoint is complete when its ``.json`` exists, and intact when
its files still match it (:func:`damage`); a kill at any instant leaves the previous
complete epoch as the newest one, plus at most temporary files (:func:`temp_files`) and
an uncommitted epoch (:func:`saved_epochs` without a ``.json``), which the trainer removes.
"""
import contextlib
import glob
import json
import os
import re
from collections.abc import Iterator

from mxcnn import common
from mxcnn.common import files as common_files
from mxcnn.graph.inference import inference_symbol

__all__ = ["CheckpointError", "checkpoint_paths", "rank_prefix", "resume_prefix",
           "save_checkpoint", "saving", "load_params", "load_state", "list_epochs", "latest_epoch",
           "damage", "newest_intact", "intact_hint", "saved_epochs", "epoch_files", "temp_files",
           "remove_files", "require_epoch"]


class CheckpointError(common.UserError):
    """A checkpoint asked for does not exist or cannot be read (message says which and why)."""


def checkpoint_paths(prefix, epoch):
    """``{'symbol', 'params', 'states', 'state', 'live', 'slow', ...}`` file names for
    ``epoch`` epochs completed."""
    return {"symbol": "%s-symbol.json" % prefix,
            "inference_symbol": "%s-inference-symbol.json" % prefix,
            "params": "%s-%04d.params" % (prefix, epoch),
            "states": "%s-%04d.states" % (prefix, epoch),
            "state": "%s-%04d.json" % (prefix, epoch),
            "live": "%s-%04d.live" % (prefix, epoch),
            "slow": "%s-%04d.slow" % (prefix, epoch)}


def save_checkpoint(prefix, epoch, symbol, arg_params, aux_params, save_states=None, state=None):
    """Write the checkpoint after ``epoch`` completed epochs; return its paths.

    ``save_states(path)`` writes the optimizer state (engine-specific) or is None (e.g.
    ``dist_async``, whose optimizer lives on the servers).  ``state`` is a JSON-able dict.
    """
    import mxnet as mx
    paths = checkpoint_paths(prefix, epoch)
    with saving(prefix, epoch):
        if os.path.exists(paths["state"]):
            os.remove(paths["state"])  # re-saving this epoch: it is incomplete until the new .json
        common.atomic_write_text(paths["symbol"], symbol.tojson())
        common.atomic_write_text(paths["inference_symbol"], _inference_json(symbol))
        arrays = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
        arrays.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
        common.atomic_write(paths["params"], lambda tmp: mx.nd.save(tmp, arrays))
        if save_states is not None:
            common.atomic_write(paths["states"], save_states)
        elif os.path.exists(paths["states"]):
            os.remove(paths["states"])  # stale states of another run must not be paired with these params
        files = {os.path.basename(path): common.file_digest(path) for path in epoch_files(prefix, epoch)
                 if path != paths["state"]}  # what this save wrote (.params, .states, .live, ...)
        common.atomic_write_text(paths["state"], json.dumps(dict(state or {}, epoch=epoch, files=files),
                                                            indent=1, sort_keys=True))
    return paths


@contextlib.contextmanager
def saving(prefix: str, epoch: int) -> Iterator[None]:
    """Write checkpoint ``epoch``'s files inside this block.  When a write fails (a full disk,
    no permission: ``OSError`` or MXNet's "FileStream.Write incomplete"), the epoch's files
    and the temporary files under ``prefix`` are removed, earlier epochs stay as they were,
    and CheckpointError says in one line why, naming the folder and its free space."""
    import mxnet as mx
    try:
        yield
    except CheckpointError:
        remove_files(prefix, [epoch], temp_files(prefix))
        raise
    except (OSError, mx.base.MXNetError) as err:
        remove_files(prefix, [epoch], temp_files(prefix))
        latest = latest_epoch(prefix)
        raise CheckpointError(
            "cannot save checkpoint %d under %s: %s; its partial files were removed, the newest "
            "complete checkpoint is %s; free space or choose another --model-prefix"
            % (epoch, prefix, common_files.write_failure(os.path.dirname(os.path.abspath(prefix)), err),
               "none" if latest is None else checkpoint_paths(prefix, latest)["params"])) from None


def _inference_json(symbol):
    return inference_symbol(symbol, all_outputs=True).tojson()


def load_params(prefix, epoch):
    """``(symbol, arg_params, aux_params)`` like ``mx.model.load_checkpoint``, with clear errors:
    a damaged file is named, and so is the newest earlier checkpoint that still loads."""
    import mxnet as mx
    paths = require_epoch(prefix, epoch)
    problem = damage(prefix, epoch)
    if problem:
        raise CheckpointError(problem)
    if os.path.isdir(paths["symbol"]):
        raise CheckpointError("the symbol file %s is a folder; it must be the PREFIX-symbol.json "
                              "saved with the checkpoint" % paths["symbol"])
    try:
        symbol = mx.sym.load(paths["symbol"])
    except (mx.base.MXNetError, OSError, UnicodeDecodeError) as err:
        raise CheckpointError("cannot read the symbol file %s (%s): it is damaged or not an "
                              "MXNet symbol" % (paths["symbol"], _mxnet_reason(err)))
    saved = _load_arrays(paths["params"])
    if saved is None:
        raise CheckpointError(_damaged_params(prefix, epoch))
    arg_params, aux_params = {}, {}
    for key, value in saved.items():
        kind, _, name = key.partition(":")
        if kind == "arg":
            arg_params[name] = value
        elif kind == "aux":
            aux_params[name] = value
    return symbol, arg_params, aux_params


def _mxnet_reason(err):
    """The informative line of an MXNetError ("Check failed: ..."), not its "Traceback"."""
    lines = [l.strip() for l in str(err).splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith(("Traceback", "File "))]
    return (useful or lines or [type(err).__name__])[-1].replace("MXNetError: ", "")[:200]


def _load_arrays(path):
    """``mx.nd.load(path)``, or None when the file is not a complete NDArray file."""
    import mxnet as mx
    if os.path.isdir(path):
        return None
    try:
        return mx.nd.load(path)
    except (mx.base.MXNetError, OSError):
        return None


def _damaged_params(prefix, epoch):
    """The message for an unreadable ``prefix-NNNN.params``: what it is and what still loads."""
    path = checkpoint_paths(prefix, epoch)["params"]
    if os.path.isdir(path):
        return "checkpoint %s is a folder, not a params file" % path
    size = os.path.getsize(path)
    earlier = newest_intact(prefix, epoch)
    if earlier is not None:
        other = checkpoint_paths(prefix, earlier)["params"]
        full = os.path.getsize(other)
        what = ("truncated (%d bytes; checkpoint %d has %d)" % (size, earlier, full)
                if size < full else "corrupt (%d bytes, not a complete NDArray file)" % size)
        return ("checkpoint %s is %s; the newest intact earlier checkpoint is %s: use "
                "--load-epoch %d" % (path, what, other, earlier))
    return ("checkpoint %s is truncated or corrupt (%d bytes, not a complete NDArray file) and "
            "no earlier checkpoint of %s loads; train again" % (path, size, prefix))


def load_state(prefix, epoch):
    """The training-state dict saved with ``epoch`` ({} for a plain MXNet checkpoint).

    CheckpointError naming the file when it is unreadable or not a JSON object."""
    path = checkpoint_paths(prefix, epoch)["state"]
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError("training state %s is corrupt (not valid JSON: %s); delete it to "
                              "use the .params alone, or load an earlier epoch" % (path, err))
    except OSError as err:
        raise CheckpointError("cannot read training state %s (%s)" % (path, err.strerror or err))
    if not isinstance(state, dict):
        raise CheckpointError("training state %s is corrupt (a JSON %s, not an object); delete it "
                              "or load an earlier epoch" % (path, type(state).__name__))
    return state


def rank_prefix(prefix, rank):
    """Where worker ``rank`` of a dist job writes its checkpoints: ``prefix`` for rank 0,
    ``prefix-RANK`` for the others (MXNet's example/image-classification/common/fit.py
    convention), so that every host keeps a full copy without a shared filesystem."""
    return prefix if not rank else "%s-%d" % (prefix, int(rank))


def resume_prefix(prefix, distributed=False):
    """The prefix to resume from: ``prefix`` when it holds a checkpoint; in a dist job
    (``distributed``) otherwise the lowest-ranked copy ``prefix-N`` present on this host.

    ps-lite numbers the workers in the order they register, so a host may hold another
    rank's copy; every copy of a dist_sync run has the same weights and optimizer state
    (each worker applies the same summed gradients), only the BatchNorm running statistics
    are that worker's own.
    """
    if list_epochs(prefix) or not distributed:
        return prefix
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{1,3})-\d{4,}\.params$")
    ranks = set()
    for path in glob.glob(glob.escape(prefix) + "-*-*.params"):
        match = pattern.match(os.path.basename(path))
        if match:
            ranks.add(int(match.group(1)))
    for rank in sorted(ranks):
        if latest_epoch(rank_prefix(prefix, rank)) is not None:
            return rank_prefix(prefix, rank)
    return prefix


def list_epochs(prefix):
    """Sorted epochs N for which ``prefix-NNNN.params`` exists."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{4,})\.params$")
    epochs = []
    for path in glob.glob(glob.escape(prefix) + "-*.params"):
        match = pattern.match(os.path.basename(path))
        if match:
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def latest_epoch(prefix):
    """Newest COMPLETE checkpoint (params + training-state json) of ``prefix``, or None."""
    complete = [e for e in list_epochs(prefix) if os.path.exists(checkpoint_paths(prefix, e)["state"])]
    return complete[-1] if complete else None


def damage(prefix, epoch, checksum=True):
    """None when every file checkpoint ``epoch``'s ``.json`` recorded still has the recorded
    size and SHA-256 (``checksum=False``: size only), or when it recorded none (MXNet's own
    and older checkpoints); else one line naming the damaged file and the newest intact
    earlier checkpoint.  A corrupt ``.json`` raises CheckpointError naming it."""
    try:
        recorded = load_state(prefix, epoch).get("files") or {}
    except CheckpointError as err:
        raise CheckpointError("%s; %s" % (err, intact_hint(prefix, epoch))) from None
    for name in sorted(recorded):
        path = os.path.join(os.path.dirname(prefix), name)
        problem = common.digest_mismatch(path, recorded[name], checksum)
        if problem:
            return "checkpoint file %s %s; %s" % (path, problem, intact_hint(prefix, epoch))
    return None


def newest_intact(prefix, before):
    """The newest epoch < ``before`` whose .json reads, whose files match it and whose
    .params loads; None if there is none."""
    for epoch in reversed([e for e in list_epochs(prefix) if e < before]):
        try:
            if damage(prefix, epoch) is None and \
                    _load_arrays(checkpoint_paths(prefix, epoch)["params"]) is not None:
                return epoch
        except CheckpointError:
            continue
    return None


def intact_hint(prefix, epoch):
    """"the newest intact earlier checkpoint is ...: use --load-epoch N" (or that none is)."""
    earlier = newest_intact(prefix, epoch)
    if earlier is None:
        return "no earlier checkpoint of %s is intact" % prefix
    return ("the newest intact earlier checkpoint is %s: use --load-epoch %d"
            % (checkpoint_paths(prefix, earlier)["params"], earlier))


def saved_epochs(prefix):
    """Sorted epochs N with any file ``prefix-NNNN.*`` (complete or not)."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{4,})\.\w+$")
    return sorted({int(m.group(1)) for m in (pattern.match(os.path.basename(p))
                                             for p in glob.glob(glob.escape(prefix) + "-*"))
                   if m})


def epoch_files(prefix, epoch):
    """The files ``prefix-NNNN.*`` of checkpoint ``epoch`` that exist (.json, .params, ...)."""
    base = "%s-%04d." % (os.path.basename(prefix), epoch)
    return sorted(path for path in glob.glob(glob.escape("%s-%04d" % (prefix, epoch)) + ".*")
                  if os.path.basename(path).startswith(base) and "." not in
                  os.path.basename(path)[len(base):])


def temp_files(prefix):
    """Temporary files that writers of ``prefix``'s files (checkpoints, symbol, log, curves)
    left behind when they were killed (``common.atomic_write``'s hidden ``.tmp`` names)."""
    folder, base = os.path.split(os.path.abspath(prefix))
    own = re.compile(r"\.%s-(\d{4,}\.\w+|symbol\.json|inference-symbol\.json|log\.jsonl|curves\.png|"
                     r"write-test)\.\w+%s$" % (re.escape(base), re.escape(common.TMP_SUFFIX)))
    return sorted(path for path in glob.glob(os.path.join(glob.escape(folder), "." + glob.escape(base)
                                                          + "-*" + common.TMP_SUFFIX))
                  if own.match(os.path.basename(path)))  # not those of a prefix "<base>-other"


def remove_files(prefix, epochs, others=()):
    """Delete checkpoints ``epochs`` (newest first, each .json before its other files, so
    that an interrupted removal never leaves a complete-looking mix) and then ``others``;
    return the paths removed."""
    removed = []
    for epoch in sorted(epochs, reverse=True):
        state = checkpoint_paths(prefix, epoch)["state"]
        for path in [state] + [p for p in epoch_files(prefix, epoch) if p != state]:
            if os.path.lexists(path):
                os.remove(path)
                removed.append(path)
    for path in others:
        if os.path.lexists(path):
            os.remove(path)
            removed.append(path)
    return removed


def require_epoch(prefix, epoch):
    """Paths of checkpoint ``epoch``; CheckpointError naming what is missing and what exists."""
    paths = checkpoint_paths(prefix, epoch)
    missing = [paths[k] for k in ("symbol", "params") if not os.path.exists(paths[k])]
    if missing:
        have = list_epochs(prefix)
        raise CheckpointError(
            "no checkpoint for --load-epoch %d: %s not found (%s); N counts completed epochs"
            % (epoch, " and ".join(missing),
               "saved epochs: " + ", ".join(map(str, have)) if have
               else "nothing saved under --model-prefix %s" % prefix))
    return paths
