"""Exponential moving average of the weights (Polyak averaging; Page 2018's "bag of tricks",
airbench's lookahead/EMA): evaluate and save the averaged weights, train the live ones.

After every ``every``-th optimizer step ``s`` the average moves towards the live weights::

    w_ema <- d_k * w_ema + (1 - d_k) * w          d_k = min(decay, (1 + k) / (10 + k))

where k counts the EMA updates done before this one (TensorFlow's ``num_updates`` warm-up,
so the first epochs are not dominated by the random initial weights).  BatchNorm running
statistics (auxiliary states) are averaged the same way.  The trainer evaluates with the
average swapped in, writes it to ``PREFIX-NNNN.params`` (the weights to use) and the live
weights to ``PREFIX-NNNN.live`` (beside the optimizer state, before the epoch's ``.json``),
so ``--resume`` continues exactly: live weights, optimizer state, average and counters.
"""
import contextlib
import os

import mxnet as mx

from mxcnn import common

__all__ = ["WeightEMA", "check_decay", "merged", "snapshot", "move_towards", "on_cpu",
           "save_weights", "load_weights"]


def check_decay(decay, every):
    """``common.UserError`` text for a bad ``--ema-decay`` / ``--ema-every``, else None."""
    if not 0.0 < decay < 1.0:
        return "--ema-decay must be in (0, 1), e.g. 0.99; got %r" % (decay,)
    if every < 1:
        return "--ema-every must be a positive number of steps, got %r" % (every,)
    return None


def merged(arrays, ctx):
    """One array from the per-device copies (identical weights; BN statistics averaged)."""
    if len(arrays) == 1:
        return arrays[0]
    return mx.nd.add_n(*[a.as_in_context(ctx) for a in arrays]) / len(arrays)


def snapshot(live, saved=None):
    """``(arg, aux)``: one copy of each of an engine's ``live`` arrays on its first device,
    taken from ``saved`` ``(arg, aux)`` where that has the name (a resumed run)."""
    args, auxs = live
    ctx = next(iter(args.values()))[0].context
    copies = ({}, {})
    for target, source, key in ((copies[0], args, 0), (copies[1], auxs, 1)):
        for name, arrays in source.items():
            if saved is not None and name in saved[key]:
                target[name] = saved[key][name].as_in_context(ctx).copy()
            else:
                target[name] = merged(arrays, ctx).copy()
    return copies


def move_towards(averages, live, decay):
    """``avg <- decay * avg + (1 - decay) * w`` for each array of ``averages`` ``(arg, aux)``,
    w being the engine's ``live`` value of the same name (merged over its devices)."""
    for target, source in zip(averages, live):
        for name, avg in target.items():
            current = merged(source[name], avg.context)
            avg *= decay
            avg += (1.0 - decay) * current


def on_cpu(arg, aux):
    """``(arg, aux)`` copied to the CPU (what a checkpoint file holds)."""
    return ({k: v.copyto(mx.cpu()) for k, v in arg.items()},
            {k: v.copyto(mx.cpu()) for k, v in aux.items()})


class WeightEMA:
    """The running average of an engine's parameters (see the module docstring)."""

    def __init__(self, decay, every=1, steps=0, updates=0):
        self.decay, self.every = float(decay), int(every)
        self.steps, self.updates = int(steps), int(updates)
        self.arg, self.aux = {}, {}

    def decay_at(self, k):
        """The decay of the (k+1)-th update."""
        return min(self.decay, (1.0 + k) / (10.0 + k))

    def start(self, live, saved=None):
        """Begin from ``saved`` ``(arg, aux)`` (a resumed average) or a copy of ``live``."""
        self.arg, self.aux = snapshot(live, saved)
        return self

    def step(self, live):
        """Count one optimizer step; update the average on every ``every``-th."""
        self.steps += 1
        if self.steps % self.every:
            return False
        move_towards((self.arg, self.aux), live, self.decay_at(self.updates))
        self.updates += 1
        return True

    def params(self):
        """``(arg, aux)`` copies of the average on the CPU (what the checkpoint holds)."""
        return on_cpu(self.arg, self.aux)

    def state(self):
        """The JSON-able counters saved in the checkpoint's training state."""
        return {"decay": self.decay, "every": self.every, "steps": self.steps,
                "updates": self.updates}

    @contextlib.contextmanager
    def applied(self, live):
        """Within the block the engine's arrays hold the average; the live weights after."""
        kept = []
        for target, source in ((self.arg, live[0]), (self.aux, live[1])):
            for name, avg in target.items():
                for array in source[name]:
                    kept.append((array, array.copy()))
                    avg.copyto(array)
        try:
            yield
        finally:
            for array, value in kept:
                value.copyto(array)


def save_weights(path, arg, aux):
    """Write weights (``arg``/``aux`` dicts: the EMA's live ones, the lookahead's slow ones) to
    ``path`` atomically, in the ``.params`` format."""
    arrays = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg.items()}
    arrays.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux.items()})
    common.atomic_write(path, lambda tmp: mx.nd.save(tmp, arrays))


LIVE_WEIGHTS = "the live weights, which a checkpoint of averaged (EMA) weights needs"


def load_weights(path, holds=LIVE_WEIGHTS):
    """``(arg, aux)`` saved by :func:`save_weights`; ``common.UserError`` naming a missing file
    and what it ``holds``."""
    if not os.path.isfile(path):
        raise common.UserError("%s is missing: it holds %s to resume; resume from an earlier "
                               "epoch with --load-epoch" % (path, holds))
    arg, aux = {}, {}
    for key, value in mx.nd.load(path).items():
        kind, _, name = key.partition(":")
        (arg if kind == "arg" else aux)[name] = value
    return arg, aux
