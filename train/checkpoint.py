"""Checkpoint files in MXNet's layout, written atomically, plus the training state for exact resume.

For a prefix ``runs/r20`` and N = the number of epochs COMPLETED (MXNet's convention:
``r20-0003.params`` is saved after the 3rd epoch, and ``--load-epoch 3`` continues with the
4th)::

    r20-symbol.json   the training symbol (SoftmaxOutput head(s), as built)
    r20-0003.params   'arg:<name>' / 'aux:<name>' arrays     -> mx.model.load_checkpoint
    r20-0003.states   optimizer state (momentum, ...) of the engine that wrote it
    r20-0003.json     training state: epoch, num_update, lr, best metric, seeds, engine

Loading elsewhere: ``mx.model.load_checkpoint('runs/r20', 3)``, or in Gluon
``SymbolBlock.imports('runs/r20-symbol.json', ['data', 'softmax_label'], 'runs/r20-0003.params')``
(the label is an input of ``SoftmaxOutput``; pass any array of shape (N,), it is unused at
inference).  A deep-supervision symbol is saved whole (all heads); output 0 is the main head.
The ``.states`` format is the engine's own (``Module`` vs ``gluon.Trainer``) and is restored
only by the same engine on the same number of devices; ``.params`` work everywhere.

Each file is written under a temporary name in the same folder and moved into place with
``os.replace``, so a crash never leaves a half-written file under a real name.  The ``.json``
is written last: a checkpoint is complete when its ``.json`` exists.
"""
import glob
import json
import os
import re

from . import common

__all__ = ["CheckpointError", "checkpoint_paths",
           "save_checkpoint", "load_params", "load_state", "list_epochs", "latest_epoch",
           "require_epoch"]


class CheckpointError(common.UserError):
    """A checkpoint asked for does not exist or cannot be read (message says which and why)."""


def checkpoint_paths(prefix, epoch):
    """``{'symbol', 'params', 'states', 'state'}`` file names for ``epoch`` epochs completed."""
    return {"symbol": "%s-symbol.json" % prefix,
            "params": "%s-%04d.params" % (prefix, epoch),
            "states": "%s-%04d.states" % (prefix, epoch),
            "state": "%s-%04d.json" % (prefix, epoch)}


def save_checkpoint(prefix, epoch, symbol, arg_params, aux_params, save_states=None, state=None):
    """Write the checkpoint after ``epoch`` completed epochs; return its paths.

    ``save_states(path)`` writes the optimizer state (engine-specific) or is None (e.g.
    ``dist_async``, whose optimizer lives on the servers).  ``state`` is a JSON-able dict.
    """
    import mxnet as mx
    paths = checkpoint_paths(prefix, epoch)
    common.atomic_write_text(paths["symbol"], symbol.tojson())
    arrays = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    arrays.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    common.atomic_write(paths["params"], lambda tmp: mx.nd.save(tmp, arrays))
    if save_states is not None:
        common.atomic_write(paths["states"], save_states)
    elif os.path.exists(paths["states"]):
        os.remove(paths["states"])  # stale states of another run must not be paired with these params
    common.atomic_write_text(paths["state"], json.dumps(dict(state or {}, epoch=epoch), indent=1, sort_keys=True))
    return paths


def load_params(prefix, epoch):
    """``(symbol, arg_params, aux_params)`` like ``mx.model.load_checkpoint``, with clear errors."""
    import mxnet as mx
    paths = require_epoch(prefix, epoch)
    try:
        symbol = mx.sym.load(paths["symbol"])
        saved = mx.nd.load(paths["params"])
    except Exception as err:  # MXNetError on a corrupt file
        raise CheckpointError("cannot read checkpoint %s: %s" % (paths["params"], str(err).splitlines()[0]))
    arg_params, aux_params = {}, {}
    for key, value in saved.items():
        kind, _, name = key.partition(":")
        if kind == "arg":
            arg_params[name] = value
        elif kind == "aux":
            aux_params[name] = value
    return symbol, arg_params, aux_params


def load_state(prefix, epoch):
    """The training-state dict saved with ``epoch`` ({} for a plain MXNet checkpoint)."""
    path = checkpoint_paths(prefix, epoch)["state"]
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


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
