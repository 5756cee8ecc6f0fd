"""Lookahead (Zhang, Lucas, Hinton, Ba 2019, "Lookahead Optimizer: k steps forward, 1 step
back") with airbench94's schedule (Jordan 2024, arXiv:2404.00498): every ``every``
optimizer steps the slow weights move towards the live (fast) ones, and the live ones jump
back to them::

    slow <- a_t * slow + (1 - a_t) * w;   w <- slow        a_t = decay * (t / T) ** 3

t counts the optimizer steps of the run, T is its total.  Early in the run a_t is about 0 and
the pull does nothing; near the end it keeps the weights close to their recent average.  After
the run's last step the live weights are set to the slow ones (a = 1), so the final checkpoint
holds them.  BatchNorm running statistics (auxiliary states) are pulled the same way, as in
airbench, whose update runs over the whole ``state_dict``.

The live weights are what the trainer evaluates and saves in ``PREFIX-NNNN.params``; the slow
ones go to ``PREFIX-NNNN.slow`` so that ``--resume`` continues exactly.  The engines write the
pulled weights into their own arrays, so they must update locally (never on a kvstore that keeps
its own copy of the weights): ``fit`` binds them that way when lookahead is on.
"""
from mxcnn.train import ema

__all__ = ["Lookahead", "check"]


def check(every, decay):
    """``common.UserError`` text for a bad ``--lookahead-every`` or ``--lookahead-decay``;
    None when both are valid."""
    if every < 0:
        return "--lookahead-every must be a number of steps >= 0 (0 = off), got %r" % (every,)
    if not 0.0 <= decay < 1.0:
        return "--lookahead-decay must be in [0, 1), e.g. 0.774 (= 0.95 ** 5); got %r" % (decay,)
    return None


class Lookahead:
    """The slow weights of an engine's parameters (see the module docstring)."""

    def __init__(self, every, decay, total_steps, steps=0):
        self.every, self.decay = int(every), float(decay)
        self.total, self.steps = max(1, int(total_steps)), int(steps)
        self.arg, self.aux = {}, {}

    def decay_at(self, step):
        """a_t of the pull after optimizer step ``step`` (1-based)."""
        return self.decay * min(1.0, step / self.total) ** 3

    def start(self, live, saved=None):
        """Begin from ``saved`` ``(arg, aux)`` (a resumed run) or a copy of ``live``."""
        self.arg, self.aux = ema.snapshot(live, saved)
        return self

    def step(self, live):
        """Count one optimizer step; pull on every ``every``-th.  True when it pulled."""
        self.steps += 1
        if self.steps % self.every:
            return False
        self.pull(live, self.decay_at(self.steps))
        return True

    def pull(self, live, a):
        """slow <- a * slow + (1 - a) * live, then every device's live copy <- slow."""
        ema.move_towards((self.arg, self.aux), live, a)
        for target, source in ((self.arg, live[0]), (self.aux, live[1])):
            for name, slow in target.items():
                for array in source[name]:
                    slow.copyto(array)

    def finish(self, live):
        """After the run's last step: the live weights become the slow ones."""
        self.pull(live, 1.0)

    def params(self):
        """``(arg, aux)`` copies of the slow weights on the CPU (the ``.slow`` file)."""
        return ema.on_cpu(self.arg, self.aux)

    def state(self):
        """The JSON-able counters saved in the checkpoint's training state."""
        return {"every": self.every, "decay": self.decay, "total": self.total,
                "steps": self.steps}
