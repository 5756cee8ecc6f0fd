"""The training engine: data-parallel SGD over MXNet contexts and kvstores, as MXNet's fit.py.

Two interchangeable engines train the same ``SoftmaxOutput`` symbol:

* ``module`` -- ``mx.mod.Module`` (the graph executor), what MXNet's
  ``example/image-classification/common/fit.py`` uses.  Honours ``__force_mirroring__``
  (``--memonger``).
* ``gluon``  -- a hybridized ``gluon.SymbolBlock`` over the symbol's logits
  (``static_alloc``/``static_shape``) with ``gluon.Trainer`` and a cross-entropy loss
  weighted per head like ``SoftmaxOutput``'s ``grad_scale``.

Both start from the same initial parameters, apply weight decay only to ``*_weight`` and
``*_gamma`` (MXNet's ``Optimizer`` default), normalise gradients by the global batch, and
save the same checkpoints (``checkpoint.py``).  A grouped symbol (deep supervision) is
trained on all outputs; metrics use output 0 only.

Labels: hard labels (N,) go to ``SoftmaxOutput`` as is; with label smoothing or mixup the
engine feeds soft labels (N, K), which ``SoftmaxOutput`` accepts as target probabilities
(its gradient is then ``p - y``).
"""
import contextlib
import logging
import math
import sys
import time
import warnings

import mxnet as mx
import numpy as np

from . import common
from . import checkpoint as ckpt
from . import runtime
from .progress import BatchMetrics, EpochLog, Speedometer

__all__ = ["ENGINES", "DEFAULT_ENGINE", "TrainingDiverged", "FitConfig", "parse_devices",
           "make_lr_scheduler", "initial_params", "softmax_heads", "label_names",
           "ModuleEngine", "GluonEngine", "training_graph", "make_engine", "epoch_seed", "fit", "benchmark"]

#: Engines by name.  bench/engine_compare.py (ResNet-20/56, batch 128, synthetic, interleaved)
#: found no consistent winner: gluon/module medians 0.66-1.7 between runs on a machine shared
#: at load 4-15, within its noise (MXNET-NOTES: 474 vs 484 img/s on ResNet-20).  Module stays
#: the default: it is what MXNet's fit.py runs and the only one that honours --memonger.
ENGINES = ("module", "gluon")
DEFAULT_ENGINE = "module"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the message names epoch, batch and the last good checkpoint."""


def parse_devices(gpus=None, cpus=None):
    """``--gpus 0,1`` -> [mx.gpu(0), mx.gpu(1)]; ``--cpus N`` -> [mx.cpu(0), ..., mx.cpu(N-1)].

    Neither given: [mx.cpu()].  ValueError for malformed lists or both given.
    """
    if gpus not in (None, "") and cpus not in (None, 0):
        raise ValueError("give either --gpus or --cpus, not both")
    if gpus not in (None, ""):
        items = [g.strip() for g in str(gpus).split(",")]
        if not all(item.isdigit() for item in items):
            raise ValueError("--gpus %r is malformed: use comma-separated device ids, e.g. --gpus 0,1"
                             % (gpus,))
        ids = [int(item) for item in items]
        if len(set(ids)) != len(ids):
            raise ValueError("--gpus %r lists a device twice" % (gpus,))
        return [mx.gpu(i) for i in ids]
    count = 1 if cpus in (None, 0) else int(cpus)
    if count < 1:
        raise ValueError("--cpus must be a positive number of CPU contexts, got %r" % (cpus,))
    return [mx.cpu(i) for i in range(count)]


def make_lr_scheduler(lr, iters_per_epoch, num_epochs, mode="step", step_epochs=(), factor=0.1,
                      warmup_epochs=0, warmup_iters=0, warmup_lr=0.0, warmup_mode="linear",
                      final_lr=0.0):
    """MXNet's own scheduler for ``step`` (MultiFactor) or ``cosine`` decay with warm-up.

    Step epochs are absolute (the lr drops after that many epochs, whatever the warm-up);
    warm-up lasts ``warmup_iters`` updates, or ``warmup_epochs`` epochs if that is given.
    ``constant`` warm-up keeps ``warmup_lr`` (He et al.'s ResNet-110 trick), ``linear``
    ramps from ``warmup_lr`` to ``lr``.  Returns None for a constant learning rate.
    """
    warmup = int(round(warmup_epochs * iters_per_epoch)) if warmup_epochs else int(warmup_iters)
    kw = dict(base_lr=lr, warmup_steps=warmup, warmup_begin_lr=warmup_lr, warmup_mode=warmup_mode)
    if mode == "cosine":
        total = max(int(num_epochs * iters_per_epoch), warmup + 1)
        return mx.lr_scheduler.CosineScheduler(max_update=total, final_lr=final_lr, **kw)
    if mode != "step":
        raise ValueError("lr scheduler must be 'step' or 'cosine', got %r" % (mode,))
    steps = [int(e * iters_per_epoch) for e in step_epochs if 0 < e < num_epochs]
    steps = [s for s in steps if s > warmup] or None
    if steps is None:
        if not warmup:
            return None
        # MultiFactorScheduler needs a step; one past the end never fires
        steps = [max(int(num_epochs * iters_per_epoch), warmup) + 1]
    return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=factor, **kw)


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
                json_op(out) != "SoftmaxOutput":
            raise ValueError("output %d (%s) of the symbol is not a SoftmaxOutput; the trainer "
                             "needs SoftmaxOutput heads" % (index, out.list_outputs()[0]))
        for key, allowed in _GLUON_UNSUPPORTED.items():
            if key in attrs and attrs[key] not in allowed:
                raise ValueError("SoftmaxOutput %s=%s is not reproduced by the gluon engine; use "
                                 "--engine module" % (key, attrs[key]))
        heads.append(_Head(children[0], float(attrs.get("grad_scale", 1.0))))
    return heads


def json_op(sym):
    """Operator name of a single-output symbol's head node."""
    import json
    graph = json.loads(sym.tojson())
    return graph["nodes"][graph["heads"][0][0]]["op"]




def _is_dist(kvstore):
    kv_type = kvstore.type if isinstance(kvstore, mx.kvstore.KVStore) else (kvstore or "")
    return kv_type.startswith("dist")


def _is_dist_sync(kvstore):
    kv_type = kvstore.type if isinstance(kvstore, mx.kvstore.KVStore) else (kvstore or "")
    return kv_type.startswith("dist") and "async" not in kv_type


class ModuleEngine:
    """``mx.mod.Module`` bound for training on ``contexts`` (MXNet's fit.py path)."""

    name = "module"

    def __init__(self, sym, contexts, data_shape, label_shape, arg_params, aux_params,
                 optimizer, optimizer_params, kvstore="local"):
        self.contexts = contexts
        labels = label_names(sym)
        self.mod = mx.mod.Module(sym, data_names=("data",), label_names=labels, context=contexts,
                                 logger=logging.getLogger("mxcnn.train"))
        self.mod.bind(data_shapes=[mx.io.DataDesc("data", tuple(data_shape))],
                      label_shapes=[mx.io.DataDesc(n, tuple(label_shape)) for n in labels],
                      for_training=True)
        self.mod.init_params(arg_params=arg_params, aux_params=aux_params, force_init=True)
        # dist_sync: workers sum gradients through the servers and each applies the same
        # update, so the optimizer state is local and can be checkpointed (rank 0)
        with runtime.temporary_env("MXNET_UPDATE_ON_KVSTORE", "0" if _is_dist_sync(kvstore) else None):
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
        arg, aux = self.mod.get_params()
        return dict(arg), dict(aux)

    def save_states(self, path):
        self.mod.save_optimizer_states(path)

    def load_states(self, path):
        self.mod.load_optimizer_states(path)


class GluonEngine:
    """Hybridized ``gluon.SymbolBlock`` over the logits + ``gluon.Trainer`` on ``contexts``."""

    name = "gluon"

    def __init__(self, sym, contexts, data_shape, label_shape, arg_params, aux_params,
                 optimizer, optimizer_params, kvstore="local"):
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
        for name, param in self.net.collect_params().items():
            source = arg_params[name] if name in arg_params else aux_params[name]
            param.shape = source.shape
            param.initialize(mx.init.Zero(), ctx=contexts, force_reinit=True)
            param.set_data(source)
            if not (name.endswith("_weight") or name.endswith("_gamma")):
                param.wd_mult = 0.0  # as mx.optimizer.Optimizer.set_wd_mult does for Module
        self.net.hybridize(static_alloc=True, static_shape=True)
        params = dict(optimizer_params)
        opt = mx.optimizer.create(optimizer, **params)
        self.scale_batch = self.batch_size
        if _is_dist_sync(kvstore):
            self.scale_batch *= kvstore.num_workers  # gradients are summed over workers
        update_on_kv = False if _is_dist_sync(kvstore) else (True if _is_dist(kvstore) else None)
        kv = kvstore if len(contexts) > 1 or _is_dist(kvstore) else None
        self.trainer = gluon.Trainer(self.net.collect_params(), opt, kvstore=kv,
                                     update_on_kvstore=update_on_kv)
        self.can_save_states = not (_is_dist(kvstore) and update_on_kv)
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
        arg, aux = {}, {}
        for name, param in self.net.collect_params().items():
            value = param.data(self.contexts[0]).copyto(mx.cpu())
            (aux if name in self.aux_names else arg)[name] = value
        return arg, aux

    def save_states(self, path):
        self.trainer.save_states(path)

    def load_states(self, path):
        """Restore the per-parameter state (momentum, ...) but keep this run's optimizer settings.

        ``Trainer.load_states`` would also swap in the pickled optimizer, i.e. the old run's
        learning-rate schedule; the Module engine keeps the current one, and so does this.
        """
        import pickle
        with open(path, "rb") as handle:
            saved = pickle.loads(handle.read())
        states = pickle.dumps(saved[0] if isinstance(saved, tuple) else saved)
        trainer = self.trainer
        if not trainer._kv_initialized:
            trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
        updaters = [trainer._kvstore._updater] if trainer._update_on_kvstore else trainer._updaters
        for updater in updaters:
            updater.set_states(states)
            updater.optimizer = trainer._optimizer


def training_graph(sym, contexts, data_shape, fuse=True):
    """The graph the engines bind: ``sym`` with BatchNorm+ReLU fused on oneDNN CPUs.

    ``graph.fusion.fuse_bn_relu`` keeps every name, so parameters, optimizer states and
    checkpoints are those of ``sym``; ``fit`` writes the unfused ``sym`` to ``-symbol.json``.
    GPU contexts, a build without oneDNN, ``fuse=False`` (``--no-fusion``) and memonger-planned
    graphs train ``sym`` as it is.
    """
    fusion = common.sibling("graph.fusion")
    if not fuse or any(ctx.device_type != "cpu" for ctx in contexts) or not fusion.available():
        return sym
    fused, count = fusion.fuse_bn_relu(sym, data=tuple(data_shape))
    if count:
        logging.getLogger("mxcnn.train").info(
            "oneDNN: %d BatchNorm+ReLU pairs fused for training (--no-fusion to keep them apart)",
            count)
    return fused


def make_engine(engine, *args, **kwargs):
    """Build the engine named ``engine`` (``module`` or ``gluon``)."""
    classes = {"module": ModuleEngine, "gluon": GluonEngine}
    if engine not in classes:
        raise ValueError("unknown engine %r; choose one of: %s" % (engine, ", ".join(ENGINES)))
    return classes[engine](*args, **kwargs)


def epoch_seed(seed, epoch, rank=0):
    """The RNG seed of ``epoch``: depends only on (seed, epoch, rank), so a resumed run replays it."""
    return (int(seed) * 1000003 + int(epoch) * 7919 + int(rank) * 104729) % (2 ** 31 - 1)


class FitConfig:
    """Everything ``fit`` needs besides the symbol and the data (see ``train_cifar.py`` flags)."""

    def __init__(self, **kw):
        self.contexts = [mx.cpu()]
        self.kvstore = "local"
        self.engine = DEFAULT_ENGINE
        self.fuse = True                 # BatchNorm+ReLU fusion on oneDNN CPUs (training_graph)
        self.batch_size = 128            # per worker (split over contexts)
        self.num_classes = 10
        self.num_epochs = 1
        self.begin_epoch = 0             # epochs already completed (checkpoint N)
        self.optimizer = "sgd"
        self.optimizer_params = {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4}
        self.lr_scheduler_args = None    # kwargs of make_lr_scheduler minus lr/iters
        self.iters_per_epoch = None      # batches per epoch (for the schedule)
        self.max_batches = None          # stop an epoch after this many batches (dist, benchmark)
        self.arg_params = None
        self.aux_params = None
        self.states_file = None
        self.begin_num_update = 0
        self.label_smoothing = 0.0
        self.mixup_alpha = 0.0
        self.seed = 0
        self.rank = 0
        self.num_workers = 1
        self.model_prefix = None
        self.save_period = 1
        self.disp_batches = 20
        self.save_symbol = None          # symbol written to -symbol.json (default: the trained one)
        self.state_extra = {}            # merged into each checkpoint's training-state json
        self.best = {}                   # best validation accuracy so far (from a resumed state)
        self.epoch_end_callback = None   # f(epochs_done, record) after each epoch's checkpoint
        self.plot = True
        self.progress_bar = None         # None: a tqdm bar only when stderr is a terminal
        self.logger = None
        for key, value in kw.items():
            if not hasattr(self, key):
                raise TypeError("unknown FitConfig option %r" % key)
            setattr(self, key, value)


def _soft_targets(labels, num_classes, smoothing):
    target = np.zeros((len(labels), num_classes), dtype=np.float32)
    target[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    if smoothing:
        target = target * (1.0 - smoothing) + smoothing / num_classes
    return target


def _evaluate(engine, val_iter, metrics):
    val_iter.reset()
    metrics.reset()
    for batch in val_iter:
        n = batch.data[0].shape[0] - (batch.pad or 0)
        probs = engine.predict(batch.data[0]).asnumpy()[:n]
        metrics.update(probs, batch.label[0].asnumpy()[:n])
    return metrics


def fit(sym, train_iter, val_iter, config):
    """Train ``sym`` on ``train_iter`` from epoch ``config.begin_epoch`` to ``config.num_epochs``.

    Returns the per-epoch records (also in ``<prefix>-log.jsonl``).  Checkpoints (rank 0
    only) after every ``save_period`` epochs and after the last.  Raises TrainingDiverged
    on a non-finite loss before anything of that epoch is saved.
    """
    cfg = config
    log = cfg.logger or logging.getLogger("mxcnn.train")
    contexts = list(cfg.contexts)
    batch_size = int(cfg.batch_size)
    if batch_size % len(contexts):
        raise ValueError("batch size %d is not divisible by the %d devices; use a multiple of %d"
                         % (batch_size, len(contexts), len(contexts)))
    data_shape = (batch_size,) + tuple(train_iter.provide_data[0].shape[1:])
    soft = bool(cfg.label_smoothing) or bool(cfg.mixup_alpha)
    label_shape = (batch_size, cfg.num_classes) if soft else (batch_size,)

    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.arg_params is None:
        arg_params, aux_params = initial_params(sym, data_shape, label_shape)
    else:
        arg_params, aux_params = cfg.arg_params, cfg.aux_params or {}

    params = dict(cfg.optimizer_params)
    lr = params.get("learning_rate", 0.01)
    if cfg.lr_scheduler_args:
        scheduler = make_lr_scheduler(lr, cfg.iters_per_epoch, cfg.num_epochs, **cfg.lr_scheduler_args)
        if scheduler is not None:
            params["lr_scheduler"] = scheduler
    params["begin_num_update"] = int(cfg.begin_num_update)
    engine = make_engine(cfg.engine, training_graph(sym, contexts, data_shape, cfg.fuse), contexts, data_shape,
                         label_shape, arg_params, aux_params, cfg.optimizer, params, cfg.kvstore)
    if cfg.states_file:
        engine.load_states(cfg.states_file)
        log.info("loaded optimizer state %s", cfg.states_file)

    writer = cfg.rank == 0 and cfg.model_prefix
    epoch_log = None
    if writer:
        epoch_log = EpochLog(cfg.model_prefix, plot=cfg.plot)
        epoch_log.resume(cfg.begin_epoch)
    save_symbol = cfg.save_symbol if cfg.save_symbol is not None else sym
    last_saved = cfg.begin_epoch if cfg.begin_epoch else None
    best = dict(cfg.best)
    speedometer = Speedometer(log, batch_size * cfg.num_workers, cfg.disp_batches)
    show_bar = sys.stderr.isatty() if cfg.progress_bar is None else cfg.progress_bar
    train_metrics, val_metrics = BatchMetrics(), BatchMetrics()
    records = []

    def current_lr():
        opt = _optimizer_of(engine)
        if opt is None:
            return lr
        return opt.lr_scheduler(max(opt.num_update, 1)) if opt.lr_scheduler else opt.lr

    with contextlib.ExitStack() as stack:
        if show_bar:  # log lines go above the bar instead of through it
            from tqdm.contrib.logging import logging_redirect_tqdm
            stack.enter_context(logging_redirect_tqdm(loggers=[log]))
        for epoch in range(cfg.begin_epoch, cfg.num_epochs):
            seed = epoch_seed(cfg.seed, epoch, cfg.rank)
            mx.random.seed(seed)
            rng = np.random.RandomState(seed)
            if hasattr(train_iter, "set_epoch"):
                train_iter.set_epoch(epoch)
            train_iter.reset()
            train_metrics.reset()
            speedometer.start_epoch()
            bar = _progress_bar(epoch, cfg.iters_per_epoch) if show_bar else None
            tic = time.time()
            samples = 0
            nbatch = 0
            for batch in train_iter:
                nbatch += 1
                n = batch_size - (batch.pad or 0)
                data = batch.data[0]
                hard = batch.label[0].asnumpy()
                label = batch.label[0]
                target = None
                if soft:
                    target = _soft_targets(hard, cfg.num_classes, cfg.label_smoothing)
                    if cfg.mixup_alpha:
                        lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)
                        perm = rng.permutation(batch_size)
                        data = lam * data + (1 - lam) * data[mx.nd.array(perm, dtype="int64")]
                        target = lam * target + (1 - lam) * target[perm]
                        if lam < 0.5:
                            hard = hard[perm]
                    label = mx.nd.array(target)
                engine.step(data, label)
                probs = engine.output().asnumpy()
                loss = train_metrics.update(probs[:n], hard[:n], None if target is None else target[:n])
                speedometer.window.update(probs[:n], hard[:n], None if target is None else target[:n])
                if not math.isfinite(loss):
                    where = ("last good checkpoint: %s" % ckpt.checkpoint_paths(cfg.model_prefix, last_saved)["params"]
                             if last_saved and cfg.model_prefix else "no checkpoint saved yet")
                    raise TrainingDiverged("loss became %s at epoch %d (Epoch[%d]), batch %d; training "
                                           "stopped, nothing of this epoch was saved; %s. Lower --lr or add "
                                           "warm-up (--warmup-epochs)" % (loss, epoch + 1, epoch, nbatch, where))
                samples += n
                speedometer(epoch, nbatch)
                if bar is not None:
                    bar.update(1)
                if cfg.max_batches and nbatch >= cfg.max_batches:
                    break
            mx.nd.waitall()
            elapsed = time.time() - tic
            if bar is not None:
                bar.close()
            for name, value in train_metrics.name_value():
                log.info("Epoch[%d] Train-%s=%f", epoch, name, value)
            log.info("Epoch[%d] Time cost=%.3f", epoch, elapsed)
            record = {"epoch": epoch + 1, "train_loss": train_metrics.loss,
                      "train_error": 1.0 - train_metrics.accuracy, "lr": current_lr(),
                      "time": elapsed, "img_per_sec": samples * cfg.num_workers / max(elapsed, 1e-9),
                      "samples": samples, "num_update": _num_update(engine)}
            if val_iter is not None:
                _evaluate(engine, val_iter, val_metrics)
                for name, value in val_metrics.name_value():
                    log.info("Epoch[%d] Validation-%s=%f", epoch, name, value)
                record.update(val_loss=val_metrics.loss, val_error=1.0 - val_metrics.accuracy)
                if not best or val_metrics.accuracy > best.get("val_accuracy", -1):
                    best = {"val_accuracy": val_metrics.accuracy, "epoch": epoch + 1}
            records.append(record)
            done = epoch + 1
            if epoch_log is not None:  # before the checkpoint: a resume truncates the log to it
                epoch_log.append(record)
            if writer and (done % max(cfg.save_period, 1) == 0 or done == cfg.num_epochs):
                arg, aux = engine.get_params()
                state = dict(cfg.state_extra, num_update=_num_update(engine), lr=record["lr"],
                             best=best, seed=cfg.seed, engine=engine.name,
                             num_devices=len(contexts), kvstore=_kv_type(cfg.kvstore))
                paths = ckpt.save_checkpoint(cfg.model_prefix, done, save_symbol, arg, aux,
                                             engine.save_states if engine.can_save_states else None, state)
                last_saved = done
                log.info('Saved checkpoint to "%s" (%d epoch(s) completed; continue with --load-epoch %d)',
                         paths["params"], done, done)
            if cfg.epoch_end_callback is not None:
                cfg.epoch_end_callback(done, record)
    return records


def _kv_type(kvstore):
    return kvstore.type if isinstance(kvstore, mx.kvstore.KVStore) else kvstore


def _optimizer_of(engine):
    if isinstance(engine, ModuleEngine):
        return engine.mod._optimizer
    return engine.trainer._optimizer


def _num_update(engine):
    opt = _optimizer_of(engine)
    return int(opt.num_update) if opt is not None else 0


def _progress_bar(epoch, total):
    from tqdm import tqdm
    return tqdm(total=total, desc="epoch %d" % (epoch + 1), unit="batch", leave=False,
                file=sys.stderr, dynamic_ncols=True)


def benchmark(sym, batch_size, image_shape=(3, 32, 32), num_batches=20, engine=DEFAULT_ENGINE,
              contexts=None, kvstore="local", warmup=3, num_classes=None, optimizer="sgd",
              fuse=True):
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
    runner = make_engine(engine, training_graph(sym, contexts, data_shape, fuse), contexts, data_shape,
                         label_shape, arg_params, aux_params,
                         optimizer, {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4}, kvstore)
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
