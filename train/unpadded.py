"""Training on a channel-padded graph (``mxcnn.graph.channel_pad``) with the unpadded
BatchNorm statistics that checkpoints, EMA and lookahead hold."""
import mxnet as mx

__all__ = ["UnpaddedStatistics"]


class UnpaddedStatistics:
    """An engine bound on a channel-padded graph, seen with unpadded BatchNorm statistics.

    ``live_params`` hands out unpadded copies of the padded moving statistics, which EMA and
    lookahead read and write: they are refreshed from the bound arrays when first asked for
    after a step, and copied back before the next step or prediction.  Reading waits for the
    step to finish (``mx.nd.waitall``): MXNet 1.9.1's oneDNN BatchNorm updates the moving
    statistics in its backward without declaring the write, so a copy queued behind the step
    can read them before the update.  Everything else is the wrapped engine's.
    """

    def __init__(self, engine, padding):
        self.engine, self.padding = engine, padding
        _, aux = engine.live_params()
        self._bound = {name: aux[name] for name in padding.names}
        self._live = {name: [padding.unpad(name, a) for a in arrays]
                      for name, arrays in self._bound.items()}
        self._stale = self._handed_out = False

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def _copy_back(self):
        """The unpadded copies, possibly written by their users, into the bound arrays."""
        if self._handed_out:
            for name, arrays in self._bound.items():
                for bound, live in zip(arrays, self._live[name]):
                    self.padding.pad(name, live, out=bound)
            self._handed_out = False

    def _refresh(self):
        if self._stale:
            mx.nd.waitall()
            for name, arrays in self._bound.items():
                for bound, live in zip(arrays, self._live[name]):
                    self.padding.unpad(name, bound, out=live)
            self._stale = False

    def step(self, data, label):
        self._copy_back()
        self.engine.step(data, label)
        self._stale = True

    def predict(self, data):
        self._copy_back()
        return self.engine.predict(data)

    def get_params(self):
        self._copy_back()
        arg, aux = self.engine.get_params()
        return arg, dict(aux, **{name: self.padding.unpad(name, aux[name])
                                 for name in self.padding.names})

    def live_params(self):
        self._refresh()
        self._handed_out = True
        arg, aux = self.engine.live_params()
        return arg, dict(aux, **self._live)
