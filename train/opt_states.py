"""Optimizer states (momentum, Adam's moments, ...) saved by parameter name, on the CPU.

MXNet's own files (``Module.save_optimizer_states``, ``gluon.Trainer.save_states``) pickle
the updater's ``{key: state}`` with every NDArray on the device it lived on, under keys that
depend on the device layout:

* Module, one device or ``update_on_kvstore=False`` (dist_sync here): key ``i * n + k`` for
  parameter i on device k of n;
* Module with the update on a local/device kvstore: key = the parameter's name;
* gluon.Trainer: key i (one updater per device), or the kvstore's updater.

Such a file reloads only onto the same devices ("invalid device ordinal" on fewer GPUs or
another CUDA_VISIBLE_DEVICES) and the same key layout.  Here a state is stored once per
parameter name (device 0's copy: data-parallel devices hold the same state), every array
copied to the CPU, in an ``mx.nd.save`` file (no pickle):

    "meta"           uint8 array of JSON: {"format": 1, "optimizer": ..., "structure": {...}}
    "s:<name>:<path>" the arrays; <path> is the position inside nested (tuple) states

:func:`load_into` puts them under the keys of the CURRENT layout and marks them unsynced,
so MXNet's ``Updater`` copies each to its weight's device on the first update
(``Updater.sync_state_context``).  Where states live on dist servers (dist_async or an
update on a dist kvstore) they can be neither read nor written from a worker:
:func:`updaters` returns None and callers must say so.
"""
import json

import mxnet as mx
import numpy as np

__all__ = ["FORMAT", "is_own_format", "updaters", "named_states", "save", "load", "load_into"]

FORMAT = 1
_META = "meta"


def _flatten(state, path, out):
    """Structure spec of ``state``; its arrays go to ``out[path] = cpu copy``."""
    if state is None:
        return None
    if isinstance(state, mx.nd.NDArray):
        out[path] = state.copyto(mx.cpu())
        return "nd"
    if isinstance(state, (tuple, list)):
        return [_flatten(s, "%s.%d" % (path, i), out) for i, s in enumerate(state)]
    raise TypeError("optimizer state of type %s cannot be saved" % type(state).__name__)


def _unflatten(spec, path, arrays):
    if spec is None:
        return None
    if spec == "nd":
        return arrays[path]
    return tuple(_unflatten(s, "%s.%d" % (path, i), arrays) for i, s in enumerate(spec))


def updaters(engine_obj):
    """``(kind, [(updater, key_of(index, name))...], names, num_devices)`` of a Module or a
    gluon.Trainer, or None when the states live on dist servers.

    ``key_of`` maps a parameter (index, name) to that updater's key for every device.
    """
    if isinstance(engine_obj, mx.mod.Module):
        names = list(engine_obj._exec_group.param_names)
        n = len(engine_obj._context)
        if engine_obj._update_on_kvstore:
            kv = engine_obj._kvstore
            if kv is None or getattr(kv, "_updater", None) is None:
                return None
            return "module", [(kv._updater, lambda i, name: [name])], names, n
        return "module", [(engine_obj._updater, lambda i, name: [i * n + k for k in range(n)])], \
            names, n
    trainer = engine_obj
    names = [p.name for p in trainer._params]
    if not trainer._kv_initialized:  # as Trainer.save_states/load_states themselves do
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    if trainer._update_on_kvstore:
        kv = trainer._kvstore
        if kv is None or getattr(kv, "_updater", None) is None:
            return None
        return "trainer", [(kv._updater, lambda i, name: [i])], names, len(trainer._contexts)
    return "trainer", [(u, lambda i, name: [i]) for u in trainer._updaters], names, \
        len(trainer._contexts)


def named_states(engine_obj):
    """``{parameter name: state}`` (device 0's copy), or None where states are on servers."""
    found = updaters(engine_obj)
    if found is None:
        return None
    _, pairs, names, _ = found
    updater, key_of = pairs[0]
    states = {}
    for i, name in enumerate(names):
        key = key_of(i, name)[0]
        if key in updater.states:
            states[name] = updater.states[key]
    return states


def save(path, engine_obj, optimizer_name=""):
    """Write the states of ``engine_obj`` to ``path``; False (nothing written) when they live
    on dist servers."""
    states = named_states(engine_obj)
    if states is None:
        return False
    arrays, structure = {}, {}
    for name, state in states.items():
        structure[name] = _flatten(state, "s:%s:" % name, arrays)
    meta = json.dumps({"format": FORMAT, "optimizer": optimizer_name, "structure": structure})
    arrays[_META] = mx.nd.array(np.frombuffer(meta.encode("utf-8"), np.uint8), dtype=np.uint8)
    mx.nd.save(path, arrays)
    return True


def is_own_format(path):
    """True for a file :func:`save` wrote (False for MXNet's pickled state files)."""
    try:
        return _META in mx.nd.load(path)
    except (mx.base.MXNetError, ValueError, TypeError, OSError):
        return False


def load(path):
    """``({name: state with CPU arrays}, meta dict)`` from a file :func:`save` wrote."""
    arrays = mx.nd.load(path)
    meta = json.loads(arrays.pop(_META).asnumpy().tobytes().decode("utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError("%s: optimizer-state format %r, this version reads %d"
                         % (path, meta.get("format"), FORMAT))
    states = {name: _unflatten(spec, "s:%s:" % name, arrays)
              for name, spec in meta["structure"].items()}
    return states, meta


def load_into(engine_obj, states):
    """Put ``{name: state}`` into the updaters of ``engine_obj`` for its current devices.

    Returns ``(restored names, missing names)``, or None when the states live on dist servers
    (nothing restored).  Each device gets its own copy; MXNet moves it to the weight's
    device on the first update.
    """
    found = updaters(engine_obj)
    if found is None:
        return None
    _, pairs, names, _ = found
    restored, missing = [], []
    for i, name in enumerate(names):
        if name not in states:
            missing.append(name)
            continue
        for updater, key_of in pairs:
            for key in key_of(i, name):
                updater.states[key] = _copy(states[name])
                updater.states_synced[key] = False
        restored.append(name)
    return restored, missing


def _copy(state):
    if state is None:
        return None
    if isinstance(state, mx.nd.NDArray):
        return state.copy()
    return tuple(_copy(s) for s in state)
