"""The two training engines behind one small interface, and the graph they bind.

* ``module`` -- ``mx.mod.Module`` (the graph executor), what MXNet's
  ``example/image-classification/common/fit.py`` uses.  Honours ``__force_mirroring__``
  (``--memonger``).
* ``gluon``  -- a hybridized ``gluon.SymbolBlock`` over the symbol's logits
  (``static_alloc``/``static_shape``) with ``gluon.Trainer`` and a cross-entropy loss
  weighted per head like ``SoftmaxOutput``'s ``grad_scale``.

The interface the training loop (``fit.py``) uses, and nothing else::

    engine.step(data, label)      forward, backward and update of one batch
    engine.output()               main-head probabilities of the last step (N, K)
    engine.predict(data)          main-head probabilities at inference (N, K)
    engine.get_params()           (arg_params, aux_params) on the CPU (aux: mean over devices)
    engine.save_states(path)      optimizer state (momentum, ...); engine.can_save_states
    engine.load_states(path)
    engine.live_params()          ({name: [array per device]}, {aux: [...]}): the bound arrays
    engine.scale_lr({name: m})    lr x m, wd x 1/m for those parameters (--bn-bias-lr-mult;
                                  scale_wd=False: lr only, --backbone-lr-mult)
    engine.optimizer              the mx.optimizer.Optimizer in use (lr, num_update)

Both start from the same initial parameters, apply weight decay only to ``*_weight`` and
``*_gamma`` (MXNet's ``Optimizer`` default) and normalise gradients by the global batch.
"""
import logging
import time
import warnings

import mxnet as mx
import numpy as np

from mxcnn.common import runtime
from mxcnn.graph import channel_pad, precision
from mxcnn.graph.symbol_json import head_op
from mxcnn.graph.training import ONEDNN_REWRITES, training_graph
from mxcnn.train import opt_states
from mxcnn.train.unpadded import UnpaddedStatistics

__all__ = ["ENGINES", "DEFAULT_ENGINE", "label_names", "input_shapes", "initial_params",
           "softmax_heads", "ModuleEngine", "GluonEngine", "make_engine", "kv_type", "nonfinite_arrays",
           "nonfinite_params", "benchmark"]

#: Engines by name.  bench/engine_compare.py (ResNet-20/56, batch 128, synthetic, interleaved)
#: found no consistent winner: gluon/module medians 0.66-1.7 between runs on a machine shared
#: at load 4-15, within its noise.  Module stays
#: the default: it is what MXNet's fit.py runs and the only one that honours --memonger.
ENGINES = ("module", "gluon")
DEFAULT_ENGINE = "module"


def label_names(sym):
    """The label Variables of ``sym`` (``['softmax_label']`` for every network here)."""
    return [name for name in sym.list_arguments() if name.endswith("_label")]


def input_shapes(sym, data_shape, label_shape):
    shapes = {"data": tuple(data_shape)}
    shapes.update({name: tuple(label_shape) for name in label_names(sym)})
    return shapes


def initial_params(sym, data_shape, label_shape=None, initializer=None):
    """Initial ``(arg_params, aux_params)`` on the CPU, as ``Module.init_params`` would make them.

    Default initializer: ``Xavier(gaussian, in, 2)`` (He et al. 2015), what MXNet's
    image-classification examples use.  Seed ``mx.random`` first for reproducibility.
    """
    initializer = initializer or mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    label_shape = label_shape or (data_shape[0],)
    arg_shapes, _, aux_shapes = sym.infer_shape(**input_shapes(sym, data_shape, label_shape))
    attrs = sym.attr_dict()
    inputs = {"data"} | set(label_names(sym))
    arg_params, aux_params = {}, {}
    for names, shapes, out in ((sym.list_arguments(), arg_shapes, arg_params),
                               (sym.list_auxiliary_states(), aux_shapes, aux_params)):
        for name, shape in zip(names, shapes):
            if name in inputs:
                continue
            arr = mx.nd.zeros(shape, ctx=mx.cpu())
            initializer(mx.init.InitDesc(name, attrs.get(name, None)), arr)
            out[name] = arr
    return arg_params, aux_params


class _Head:
    def __init__(self, logits, grad_scale):
        self.logits, self.grad_scale = logits, grad_scale


_GLUON_UNSUPPORTED = {"normalization": ("null",), "use_ignore": ("False", "0", "false"),
                      "multi_output": ("False", "0", "false"), "smooth_alpha": ("0", "0.0"),
                      "preserve_shape": ("False", "0", "false"), "out_grad": ("False", "0", "false")}


def softmax_heads(sym):
    """``[_Head(logits, grad_scale)]`` for each output of ``sym`` (each must be a SoftmaxOutput)."""
    heads = []
    for index in range(len(sym.list_outputs())):
        out = sym[index]
        attrs = out.list_attr()
        children = out.get_children()
        if children is None or not out.list_outputs()[0].endswith("_output") or \
                head_op(out) != "SoftmaxOutput":
            raise ValueError("output %d (%s) of the symbol is not a SoftmaxOutput; the trainer "
                             "needs SoftmaxOutput heads" % (index, out.list_outputs()[0]))
        for key, allowed in _GLUON_UNSUPPORTED.items():
            if key in attrs and attrs[key] not in allowed:
                raise ValueError("SoftmaxOutput %s=%s is not reproduced by the gluon engine; use "
                                 "--engine module" % (key, attrs[key]))
        heads.append(_Head(children[0], float(attrs.get("grad_scale", 1.0))))
    return heads


def nonfinite_arrays(named):
    """Sorted names of the arrays in ``[(name, NDArray), ...]`` that hold a NaN or an Inf.

    One fused ``multi_sum_sq`` per context and one host copy of its per-array sums: cheap
    enough for every training step (``bench/nan_guard.py``).  A sum that overflows although
    the array is finite (|values| > ~1e19) is re-checked element by element.
    """
    by_context = {}
    for name, array in named:
        by_context.setdefault(array.context, []).append((name, array))
    bad = set()
    for group in by_context.values():
        sums = mx.nd.multi_sum_sq(*[array for _, array in group], num_arrays=len(group)).asnumpy()
        bad.update(name for (name, array), total in zip(group, sums)
                   if not np.isfinite(total) and not np.isfinite(array.asnumpy()).all())
    return sorted(bad)


def nonfinite_params(engine):
    """Names of ``engine``'s parameters and running statistics holding NaN/Inf on any device."""
    return nonfinite_arrays([(name, array) for group in engine.live_params()
                             for name, arrays in group.items() for array in arrays])


def kv_type(kvstore):
    """The kvstore's type name (``local``, ``device``, ``dist_sync``, ...) of an object or a name."""
    return kvstore.type if isinstance(kvstore, mx.kvstore.KVStore) else (kvstore or "")


def _is_dist(kvstore):
    return kv_type(kvstore).startswith("dist")


def _is_dist_sync(kvstore):
    return _is_dist(kvstore) and "async" not in kv_type(kvstore)


class ModuleEngine:
    """``mx.mod.Module`` bound for training on ``contexts`` (MXNet's fit.py path)."""

    name = "module"

    def __init__(self, sym, contexts, data_shape, label_shape, arg_params, aux_params,
                 optimizer, optimizer_params, kvstore="local", local_updates=False,
                 fixed_params=()):
        self.contexts = contexts
        labels = label_names(sym)
        self.mod = mx.mod.Module(sym, data_names=("data",), label_names=labels, context=contexts,
                                 logger=logging.getLogger("mxcnn.train"),
                                 fixed_param_names=list(fixed_params) or None)
        self.mod.bind(data_shapes=[mx.io.DataDesc("data", tuple(data_shape))],
                      label_shapes=[mx.io.DataDesc(n, tuple(label_shape)) for n in labels],
                      for_training=True)
        self.mod.init_params(arg_params=arg_params, aux_params=aux_params, force_init=True)
        # dist_sync: workers sum gradients through the servers and each applies the same
        # update, so the optimizer state is local and can be checkpointed (rank 0);
        # local_updates (train/lookahead.py writes the weights): no kvstore copy of them either
        local = local_updates or _is_dist_sync(kvstore)
        with runtime.temporary_env("MXNET_UPDATE_ON_KVSTORE", "0" if local else None):
            self.mod.init_optimizer(kvstore=kvstore, optimizer=optimizer,
                                    optimizer_params=dict(optimizer_params))
        self.can_save_states = not (_is_dist(kvstore) and self.mod._update_on_kvstore)

    def step(self, data, label):
        self.mod.forward_backward(mx.io.DataBatch(data=[data], label=[label]))
        self.mod.update()

    def output(self):
        """Main-head probabilities of the last step (N, K), merged over devices."""
        return self.mod.get_outputs()[0]

    def predict(self, data):
        self.mod.forward(mx.io.DataBatch(data=[data], label=None), is_train=False)
        return self.mod.get_outputs()[0]

    def get_params(self):
        mx.nd.waitall()  # the BatchNorm statistics' last update is a write MXNet does not track
        arg, aux = self.mod.get_params()
        return dict(arg), dict(aux)

    def live_params(self):
        """``({name: [array per device]}, {aux name: [...]})``: the bound arrays themselves
        (train/ema.py reads and, to evaluate the average, overwrites them)."""
        group = self.mod._exec_group
        return (dict(zip(group.param_names, group.param_arrays)),
                dict(zip(group.aux_names, group.aux_arrays)))

    def scale_lr(self, multipliers, scale_wd=True):
        """lr x m and (``scale_wd``) wd x 1/m for each named parameter (``{name: m}``), on top
        of the symbol's ``__lr_mult__``/``__wd_mult__``; the optimizer keys them by name."""
        opt = self.optimizer
        for name, m in multipliers.items():
            opt.lr_mult[name] = opt.lr_mult.get(name, 1.0) * m
            if scale_wd:
                opt.wd_mult[name] = opt.wd_mult.get(name, 1.0) / m

    def save_states(self, path):
        """Optimizer state by parameter name, on the CPU (train/opt_states.py): any device
        layout, either engine, loads it."""
        _save_states(self, self.mod, path)

    def load_states(self, path):
        """Restore ``path`` onto this run's devices; return one line saying what happened."""
        return _restore_states(self, self.mod, path, self.mod.load_optimizer_states)

    @property
    def optimizer(self):
        return self.mod._optimizer  # Module has no public accessor; set by init_optimizer


class GluonEngine:
    """Hybridized ``gluon.SymbolBlock`` over the logits + ``gluon.Trainer`` on ``contexts``."""

    name = "gluon"

    def __init__(self, sym, contexts, data_shape, label_shape, arg_params, aux_params,
                 optimizer, optimizer_params, kvstore="local", local_updates=False,
                 fixed_params=()):
        from mxnet import gluon
        self.contexts = contexts
        heads = softmax_heads(sym)
        self.weights = [h.grad_scale for h in heads]
        self.soft = len(label_shape) == 2
        self.batch_size = int(data_shape[0])
        with warnings.catch_warnings():  # "Cannot decide type for data": it is float32
            warnings.simplefilter("ignore", UserWarning)
            self.net = gluon.SymbolBlock([h.logits for h in heads], [mx.sym.var("data")])
        self.aux_names = set(sym.list_auxiliary_states())
        sym_attrs = sym.attr_dict()
        for name, param in self.net.collect_params().items():
            source = arg_params[name] if name in arg_params else aux_params[name]
            param.shape = source.shape
            param.initialize(mx.init.Zero(), ctx=contexts, force_reinit=True)
            param.set_data(source)
            if not (name.endswith("_weight") or name.endswith("_gamma")):
                param.wd_mult = 0.0  # as mx.optimizer.Optimizer.set_wd_mult does for Module
            attrs = sym_attrs.get(name, {})  # the symbol's multipliers, as Module reads them
            param.lr_mult = float(attrs.get("__lr_mult__", param.lr_mult))
            param.wd_mult = float(attrs.get("__wd_mult__", param.wd_mult))
            if name in fixed_params:  # Module's fixed_param_names
                param.grad_req = "null"
        self.net.hybridize(static_alloc=True, static_shape=True)
        params = dict(optimizer_params)
        opt = mx.optimizer.create(optimizer, **params)
        self.scale_batch = self.batch_size
        if _is_dist_sync(kvstore):
            self.scale_batch *= kvstore.num_workers  # gradients are summed over workers
        local = local_updates or _is_dist_sync(kvstore)  # as in ModuleEngine
        update_on_kv = False if local else (True if _is_dist(kvstore) else None)
        kv = kvstore if len(contexts) > 1 or _is_dist(kvstore) else None
        self.trainer = gluon.Trainer(self.net.collect_params(), opt, kvstore=kv,
                                     update_on_kvstore=update_on_kv)
        self.can_save_states = not (_is_dist(kvstore) and update_on_kv)
        if kv is not None and self.can_save_states:
            _set_up_kvstore(self.trainer)
        self._outputs = None

    def _loss(self, logits, label):
        logp = mx.nd.log_softmax(logits, axis=-1)
        if self.soft:
            return -(logp * label).sum(axis=1)
        return -mx.nd.pick(logp, label, axis=1)

    def step(self, data, label):
        from mxnet import autograd, gluon
        datas = gluon.utils.split_and_load(data, self.contexts, even_split=False)
        labels = gluon.utils.split_and_load(label, self.contexts, even_split=False)
        losses, outputs = [], []
        with autograd.record():
            for x, y in zip(datas, labels):
                outs = self.net(x)
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                loss = sum(w * self._loss(o, y) for w, o in zip(self.weights, outs))
                losses.append(loss)
                outputs.append(outs[0])
        autograd.backward(losses)
        self.trainer.step(self.scale_batch)
        self._outputs = outputs

    def output(self):
        return mx.nd.concat(*[mx.nd.softmax(o).as_in_context(mx.cpu()) for o in self._outputs], dim=0)

    def predict(self, data):
        from mxnet import gluon
        outs = []
        for x in gluon.utils.split_and_load(data, self.contexts, even_split=False):
            out = self.net(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            outs.append(mx.nd.softmax(out).as_in_context(mx.cpu()))
        return mx.nd.concat(*outs, dim=0)

    def get_params(self):
        """``(arg, aux)`` on the CPU.  Each context keeps its own BatchNorm running statistics;
        aux is their mean, as ``Module.get_params`` gives it (a resumed run starts every context
        from it, and the mean evolves the same: exact resume within rounding)."""
        mx.nd.waitall()  # as ModuleEngine.get_params
        arg, aux = {}, {}
        for name, param in self.net.collect_params().items():
            if name in self.aux_names:
                copies = [array.copyto(mx.cpu()) for array in param.list_data()]
                aux[name] = sum(copies) / len(copies) if len(copies) > 1 else copies[0]
            else:
                arg[name] = param.data(self.contexts[0]).copyto(mx.cpu())
        return arg, aux

    def live_params(self):
        """``({name: [array per context]}, {aux name: [...]})``: the parameters' own arrays."""
        arg, aux = {}, {}
        for name, param in self.net.collect_params().items():
            (aux if name in self.aux_names else arg)[name] = param.list_data()
        return arg, aux

    def scale_lr(self, multipliers, scale_wd=True):
        """lr x m and (``scale_wd``) wd x 1/m for each named parameter (``{name: m}``)."""
        params = self.net.collect_params()
        for name, m in multipliers.items():
            params[name].lr_mult *= m
            if scale_wd:
                params[name].wd_mult /= m

    def save_states(self, path):
        """As ``ModuleEngine.save_states`` (the same file format)."""
        _save_states(self, self.trainer, path)

    def load_states(self, path):
        """Restore ``path`` onto this run's devices; return one line saying what happened."""
        return _restore_states(self, self.trainer, path, self._load_mxnet_states)

    def _load_mxnet_states(self, path):
        """``Trainer.save_states`` files of older runs: the per-parameter state (momentum, ...)
        but this run's optimizer settings.

        ``Trainer.load_states`` also swaps in the pickled optimizer, i.e. the old run's
        learning-rate schedule; the Module engine keeps the current one, and so does this:
        the saved optimizer keeps only its progress (update counts), the rest is this run's.
        """
        mine = self.trainer.optimizer
        self.trainer.load_states(path)
        saved = self.trainer.optimizer
        progress = {key: value for key, value in vars(saved).items() if key in _OPTIMIZER_PROGRESS}
        vars(saved).update({key: value for key, value in vars(mine).items()
                            if key not in _OPTIMIZER_PROGRESS})
        vars(saved).update(progress)

    @property
    def optimizer(self):
        return self.trainer.optimizer


#: Optimizer attributes that record training progress rather than settings (mx.optimizer).
_OPTIMIZER_PROGRESS = ("num_update", "_index_update_count", "_all_index_update_counts", "param_dict")


def _set_up_kvstore(trainer):
    """Make ``trainer`` set up its kvstore now, before the first forward pass.

    ``gluon.Trainer`` does it lazily in its first ``step()``, broadcasting every parameter
    from context 0 to the others -- the BatchNorm running statistics too, which that step's
    forward has just updated in place.  In MXNet 1.9.1 the copy is not ordered after that
    update: context 0 kept or lost its first update at random (a 2-context run, and so its
    resume, was not reproducible), and the other contexts always lost theirs, unlike Module.
    ``Trainer.save_states`` is the public call that sets the kvstore up; the optimizer
    state it writes is still empty and is thrown away.
    """
    import os
    import tempfile
    fd, path = tempfile.mkstemp(suffix=".states")
    os.close(fd)
    try:
        trainer.save_states(path)
    finally:
        os.remove(path)


def _optimizer_name(optimizer):
    return type(optimizer).__name__.lower() if optimizer is not None else ""


def _save_states(engine, target, path):
    if not opt_states.save(path, target, _optimizer_name(engine.optimizer)):
        raise RuntimeError("the optimizer state lives on the kvstore servers; can_save_states "
                           "must be checked before save_states")


def _restore_states(engine, target, path, mxnet_loader):
    """Load ``path`` (ours, or MXNet's own pickled format via ``mxnet_loader``) into
    ``target``; the returned line says whether and how much momentum was restored."""
    if not opt_states.is_own_format(path):
        mxnet_loader(path)
        return "optimizer state restored from %s (MXNet's own format)" % path
    states, meta = opt_states.load(path)
    mine = _optimizer_name(engine.optimizer)
    if meta.get("optimizer") and meta["optimizer"] != mine:
        return ("optimizer state NOT restored: %s holds %s state and this run uses %s; the "
                "optimizer starts afresh" % (path, meta["optimizer"], mine))
    result = opt_states.load_into(target, states)
    if result is None:
        return ("optimizer state NOT restored from %s: with this kvstore the optimizer runs on "
                "the servers, which a worker cannot load; momentum starts at zero" % path)
    restored, missing = result
    if missing:
        return ("optimizer state restored for %d of %d parameters from %s; none saved for %s"
                % (len(restored), len(restored) + len(missing), path, ", ".join(missing[:3])))
    return ("optimizer state restored from %s (%d parameters, onto %d device(s))"
            % (path, len(restored), len(engine.contexts)))


#: The oneDNN CPU rewrites of ``training_graph``, in the order they run.
def make_engine(engine, sym, contexts, data_shape, label_shape, arg_params, aux_params, *args,
                **kwargs):
    """Build the engine named ``engine`` (``module`` or ``gluon``) on the training graph
    ``sym``; on a channel-padded graph (``graph.channel_pad``) wrapped so that it takes and
    gives the unpadded BatchNorm statistics of ``aux_params``."""
    classes = {"module": ModuleEngine, "gluon": GluonEngine}
    if engine not in classes:
        raise ValueError("unknown engine %r; choose one of: %s" % (engine, ", ".join(ENGINES)))
    padding = channel_pad.AuxPadding.of(sym)
    if padding:
        aux_params = padding.pad_params(aux_params)
    built = classes[engine](sym, contexts, data_shape, label_shape, arg_params, aux_params, *args,
                            **kwargs)
    return UnpaddedStatistics(built, padding) if padding else built


def benchmark(sym, batch_size, image_shape=(3, 32, 32), num_batches=20, engine=DEFAULT_ENGINE,
              contexts=None, kvstore="local", warmup=3, num_classes=None, optimizer="sgd",
              fuse=True, dtype="float32", rewrites=ONEDNN_REWRITES):
    """Training throughput (images/s) of ``sym`` on one fixed synthetic batch.

    The timed loop is the engine's bare step (forward, backward, update) with no data
    loading, metrics or host copies; it ends with ``mx.nd.waitall()``.  ``warmup`` steps
    (bind, first-iteration allocation) are not timed.
    """
    contexts = contexts or [mx.cpu()]
    data_shape = (int(batch_size),) + tuple(image_shape)
    label_shape = (int(batch_size),)
    mx.random.seed(0)
    arg_params, aux_params = initial_params(sym, data_shape, label_shape)
    if num_classes is None:
        num_classes = sym.infer_shape(**input_shapes(sym, data_shape, label_shape))[1][0][1]
    params = dict(precision.optimizer_params(dtype),
                  learning_rate=0.01, momentum=0.9, wd=1e-4)
    graph = training_graph(sym, contexts, data_shape, fuse, dtype, rewrites)
    runner = make_engine(engine, graph, contexts, data_shape, label_shape, arg_params, aux_params,
                         optimizer, params, kvstore)
    data = mx.nd.random.uniform(-1, 1, shape=data_shape)
    label = mx.nd.array(np.arange(batch_size) % num_classes)
    for _ in range(warmup):
        runner.step(data, label)
    mx.nd.waitall()
    tic = time.time()
    for _ in range(num_batches):
        runner.step(data, label)
    mx.nd.waitall()
    return num_batches * batch_size / (time.time() - tic)
