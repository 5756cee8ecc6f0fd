"""The training loop: data-parallel SGD over MXNet contexts and kvstores, as MXNet's fit.py.

``fit`` runs epochs of ``engine.step`` (``engines.py``: Module or Gluon behind one
interface), evaluates, and saves checkpoints (``checkpoint.py``).  Each piece is its own
function: ``_train_epoch`` -> ``_train_step`` (labels, mixup, the divergence check),
``_evaluate``, ``_save_epoch``.  The NaN guard checks the loss of every batch and, with one
fused sum of squares (``engines.nonfinite_params``, ~0.2-0.5% of a ResNet-20 step:
``bench/nan_guard.py``), every weight and running statistic after each update and before
each checkpoint: a diverged run stops before anything non-finite is logged or saved.
A grouped symbol (deep supervision) is trained on all outputs; metrics use output 0 only.

Labels: hard labels (N,) go to ``SoftmaxOutput`` as is; with label smoothing or mixup the
loop feeds soft labels (N, K), which ``SoftmaxOutput`` accepts as target probabilities
(its gradient is then ``p - y``).
"""
import contextlib
import logging
import math
import sys
import time

import mxnet as mx
import numpy as np

from mxcnn import common
from mxcnn.graph import precision
from mxcnn.inference import checkpoint as ckpt
from mxcnn.inference import tta
from mxcnn.train import data_init, ema, lookahead
from mxcnn.train.engines import (  # noqa: F401
    DEFAULT_ENGINE,
    ENGINES,
    benchmark,
    initial_params,
    kv_type,
    label_names,
    make_engine,
    nonfinite_arrays,
    nonfinite_params,
    training_graph,
)
from mxcnn.train.progress import BatchMetrics, EpochLog, Speedometer

__all__ = ["ENGINES", "DEFAULT_ENGINE", "TrainingDiverged", "FitConfig",
           "make_lr_scheduler", "initial_params", "epoch_seed", "fit", "benchmark"]


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN/Inf; the message names epoch, batch and the last good
    checkpoint."""


def make_lr_scheduler(lr, iters_per_epoch, num_epochs, mode="step", step_epochs=(), factor=0.1,
                      warmup_epochs=0, warmup_iters=0, warmup_lr=0.0, warmup_mode="linear",
                      final_lr=0.0):
    """MXNet's own scheduler for ``step`` (MultiFactor), ``cosine`` or ``linear`` (Poly, power 1)
    decay to ``final_lr``, with warm-up.

    Step epochs are absolute (the lr drops after that many epochs, whatever the warm-up);
    warm-up lasts ``warmup_iters`` updates, or ``warmup_epochs`` epochs if that is given.
    ``constant`` warm-up keeps ``warmup_lr`` (He et al.'s ResNet-110 trick), ``linear``
    ramps from ``warmup_lr`` to ``lr``.  Returns None for a constant learning rate.
    """
    warmup = int(round(warmup_epochs * iters_per_epoch)) if warmup_epochs else int(warmup_iters)
    kw = dict(base_lr=lr, warmup_steps=warmup, warmup_begin_lr=warmup_lr, warmup_mode=warmup_mode)
    if mode in ("cosine", "linear"):  # linear: the triangular schedule of Page 2018 / airbench
        total = max(int(num_epochs * iters_per_epoch), warmup + 1)
        if mode == "linear":
            return mx.lr_scheduler.PolyScheduler(max_update=total, pwr=1, final_lr=final_lr, **kw)
        return mx.lr_scheduler.CosineScheduler(max_update=total, final_lr=final_lr, **kw)
    if mode != "step":
        raise ValueError("lr scheduler must be 'step', 'cosine' or 'linear', got %r" % (mode,))
    steps = [int(e * iters_per_epoch) for e in step_epochs if 0 < e < num_epochs]
    steps = [s for s in steps if s > warmup] or None
    if steps is None:
        if not warmup:
            return None
        # MultiFactorScheduler needs a step; one past the end never fires
        steps = [max(int(num_epochs * iters_per_epoch), warmup) + 1]
    return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=factor, **kw)


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
        self.dtype = "float32"           # compute precision (graph.precision; weights stay fp32)
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
        self.val_sum = None              # dist, sharded validation: f([n, correct, loss]) -> sums
        self.plot = True
        self.progress_bar = None         # None: a tqdm bar only when stderr is a terminal
        self.logger = None
        self.ema_decay = 0.0             # weight EMA (train/ema.py); 0: none
        self.ema_every = 1               # EMA update every N optimizer steps
        self.ema_resume = None           # (state dict, (arg, aux) average) of a resumed run
        self.lookahead_every = 0         # lookahead (train/lookahead.py) every N steps; 0: none
        self.lookahead_decay = 0.95 ** 5  # its decay at the end of the run
        self.lookahead_resume = None     # (state dict, (arg, aux) slow weights) of a resumed run
        self.tta = ()                    # test-time augmentation views (inference/tta.py)
        self.init_images = None          # training images for __data_init__ (train/data_init.py)
        self.lr_multipliers = None       # {param name: m}: lr x m, wd x 1/m (engine.scale_lr)
        self.lr_scales = None            # {param name: m}: lr x m only (--backbone-lr-mult)
        self.fixed_params = ()           # parameters not trained (--freeze; train/finetune.py)
        for key, value in kw.items():
            if not hasattr(self, key):
                raise TypeError("unknown FitConfig option %r" % key)
            setattr(self, key, value)

    @property
    def soft_labels(self):
        """Label smoothing and mixup train on target probabilities (N, K) instead of ids (N,)."""
        return bool(self.label_smoothing) or bool(self.mixup_alpha)


class _Run:
    """One ``fit`` call's moving parts: the engine, metrics, logs and what was saved last."""

    def __init__(self, sym, data_shape, config):
        cfg = self.cfg = config
        self.log = cfg.logger or logging.getLogger("mxcnn.train")
        self.contexts = list(cfg.contexts)
        self.batch_size = int(data_shape[0])
        self.engine = _make_engine(sym, data_shape, cfg)
        if cfg.states_file:
            self.log.info("%s", self.engine.load_states(cfg.states_file))
        if cfg.lr_multipliers:
            self.engine.scale_lr(cfg.lr_multipliers)
        if cfg.lr_scales:
            self.engine.scale_lr(cfg.lr_scales, scale_wd=False)
        self.ema = _make_ema(self.engine, cfg, self.log)
        self.lookahead = _make_lookahead(self.engine, cfg, self.log)
        self.writer = bool(cfg.rank == 0 and cfg.model_prefix)  # the log and the curves
        # every worker checkpoints, rank r > 0 under PREFIX-r: each host can resume alone
        self.save_prefix = ckpt.rank_prefix(cfg.model_prefix, cfg.rank) if cfg.model_prefix else None
        self.epoch_log = EpochLog(cfg.model_prefix, plot=cfg.plot) if self.writer else None
        if self.epoch_log is not None:
            self.epoch_log.resume(cfg.begin_epoch)
        self.save_symbol = cfg.save_symbol if cfg.save_symbol is not None else sym
        self.last_saved = cfg.begin_epoch if cfg.begin_epoch else None
        self.best = dict(cfg.best)
        self.speedometer = Speedometer(self.log, self.batch_size * cfg.num_workers, cfg.disp_batches)
        self.train_metrics, self.val_metrics = BatchMetrics(), BatchMetrics()
        self.base_lr = dict(cfg.optimizer_params).get("learning_rate", 0.01)

    def current_lr(self):
        opt = self.engine.optimizer
        if opt is None:
            return self.base_lr
        return opt.lr_scheduler(max(opt.num_update, 1)) if opt.lr_scheduler else opt.lr

    def num_update(self):
        opt = self.engine.optimizer
        return int(opt.num_update) if opt is not None else 0


def _make_ema(engine, cfg, log):
    """The weight average of ``--ema-decay`` (None without), resumed from ``cfg.ema_resume``."""
    if not cfg.ema_decay:
        return None
    state, saved = cfg.ema_resume or ({}, None)
    average = ema.WeightEMA(cfg.ema_decay, cfg.ema_every, state.get("steps", 0),
                            state.get("updates", 0)).start(engine.live_params(), saved)
    log.info("weight EMA: decay %g every %d step(s)%s; checkpoints hold the average", cfg.ema_decay,
             cfg.ema_every, ", resumed after %d updates" % average.updates if saved else "")
    return average


def _make_lookahead(engine, cfg, log):
    """The slow weights of ``--lookahead-every`` (None without), resumed from
    ``cfg.lookahead_resume``; the run's total steps set its schedule."""
    if not cfg.lookahead_every:
        return None
    state, saved = cfg.lookahead_resume or ({}, None)
    total = int(cfg.iters_per_epoch or 1) * int(cfg.num_epochs)
    slow = lookahead.Lookahead(cfg.lookahead_every, cfg.lookahead_decay, total,
                               state.get("steps", 0)).start(engine.live_params(), saved)
    log.info("lookahead: every %d step(s), decay %g x (step/%d)^3%s", slow.every, slow.decay,
             total, ", resumed after %d steps" % slow.steps if saved else "")
    return slow


def _make_engine(sym, data_shape, cfg):
    """The configured engine bound on ``training_graph(sym)``, from the initial or given params."""
    label_shape = (data_shape[0], cfg.num_classes) if cfg.soft_labels else (data_shape[0],)
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.arg_params is None:
        arg_params, aux_params = initial_params(sym, data_shape, label_shape)
        if cfg.init_images is not None:
            data_init.apply(sym, arg_params, cfg.init_images, cfg.logger)
    else:
        arg_params, aux_params = cfg.arg_params, cfg.aux_params or {}
    params = dict(precision.optimizer_params(cfg.dtype),
                  **cfg.optimizer_params)
    if cfg.lr_scheduler_args:
        scheduler = make_lr_scheduler(params.get("learning_rate", 0.01), cfg.iters_per_epoch,
                                      cfg.num_epochs, **cfg.lr_scheduler_args)
        if scheduler is not None:
            params["lr_scheduler"] = scheduler
    params["begin_num_update"] = int(cfg.begin_num_update)
    contexts = list(cfg.contexts)
    return make_engine(cfg.engine, training_graph(sym, contexts, data_shape, cfg.fuse, cfg.dtype),
                       contexts, data_shape, label_shape, arg_params, aux_params, cfg.optimizer,
                       params, cfg.kvstore, local_updates=bool(cfg.lookahead_every),
                       fixed_params=tuple(cfg.fixed_params))


def fit(sym, train_iter, val_iter, config):
    """Train ``sym`` on ``train_iter`` from epoch ``config.begin_epoch`` to ``config.num_epochs``.

    Returns the per-epoch records (also in ``<prefix>-log.jsonl``).  Checkpoints (every
    worker; rank r > 0 under ``<prefix>-r``) after every ``save_period`` epochs and after the
    last.  Raises TrainingDiverged on a non-finite loss before anything of that epoch is
    saved, and a one-line ``common.UserError`` when a save does not fit on the disk.
    """
    cfg = config
    batch_size = int(cfg.batch_size)
    if batch_size % len(cfg.contexts):
        raise common.UserError("batch size %d is not divisible by the %d devices; use a multiple "
                               "of %d" % (batch_size, len(cfg.contexts), len(cfg.contexts)))
    run = _Run(sym, (batch_size,) + tuple(train_iter.provide_data[0].shape[1:]), cfg)
    records = []
    show_bar = sys.stderr.isatty() if cfg.progress_bar is None else cfg.progress_bar
    with contextlib.ExitStack() as stack:
        if show_bar:  # log lines go above the bar instead of through it
            from tqdm.contrib.logging import logging_redirect_tqdm
            stack.enter_context(logging_redirect_tqdm(loggers=[run.log]))
        for epoch in range(cfg.begin_epoch, cfg.num_epochs):
            record = _train_epoch(run, epoch, train_iter, show_bar)
            if run.lookahead is not None and epoch + 1 == cfg.num_epochs:
                run.lookahead.finish(run.engine.live_params())  # the run ends on the slow weights
            if val_iter is not None:
                _validate(run, epoch, val_iter, record)
            records.append(record)
            if run.epoch_log is not None:  # before the checkpoint: a resume truncates the log to it
                run.epoch_log.append(record)
            done = epoch + 1
            if run.save_prefix and (done % max(cfg.save_period, 1) == 0 or done == cfg.num_epochs):
                _save_epoch(run, done, record)
            if cfg.epoch_end_callback is not None:
                cfg.epoch_end_callback(done, record)
    return records


def _train_epoch(run, epoch, train_iter, show_bar):
    """One pass over ``train_iter`` (seeded by ``epoch_seed``); returns the epoch's record."""
    cfg = run.cfg
    seed = epoch_seed(cfg.seed, epoch, cfg.rank)
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    if hasattr(train_iter, "set_epoch"):
        train_iter.set_epoch(epoch)
    train_iter.reset()
    run.train_metrics.reset()
    run.speedometer.start_epoch()
    bar = _progress_bar(epoch, cfg.iters_per_epoch) if show_bar else None
    tic = time.time()
    samples = nbatch = 0
    for batch in train_iter:
        nbatch += 1
        samples += _train_step(run, batch, rng, epoch, nbatch)
        run.speedometer(epoch, nbatch)
        if bar is not None:
            bar.update(1)
        if cfg.max_batches and nbatch >= cfg.max_batches:
            break
    mx.nd.waitall()
    elapsed = time.time() - tic
    _require_finite(run, epoch, nbatch, nonfinite_params(run.engine))
    if bar is not None:
        bar.close()
    for name, value in run.train_metrics.name_value():
        run.log.info("Epoch[%d] Train-%s=%f", epoch, name, value)
    run.log.info("Epoch[%d] Time cost=%.3f", epoch, elapsed)
    return {"epoch": epoch + 1, "train_loss": run.train_metrics.loss,
            "train_error": 1.0 - run.train_metrics.accuracy, "lr": run.current_lr(),
            "time": elapsed, "img_per_sec": samples * cfg.num_workers / max(elapsed, 1e-9),
            "samples": samples, "num_update": run.num_update()}


def _batch_targets(batch, cfg, rng, batch_size):
    """``(data, label fed to the engine, hard labels, soft targets or None)`` of one batch.

    Label smoothing and mixup (Zhang et al. 2018) turn the ids into target probabilities;
    mixup's hard label for the accuracy metric is the larger of the two mixed.
    """
    data, label = batch.data[0], batch.label[0]
    hard = label.asnumpy()
    if not cfg.soft_labels:
        return data, label, hard, None
    target = _soft_targets(hard, cfg.num_classes, cfg.label_smoothing)
    if cfg.mixup_alpha:
        lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)
        perm = rng.permutation(batch_size)
        data = lam * data + (1 - lam) * data[mx.nd.array(perm, dtype="int64")]
        target = lam * target + (1 - lam) * target[perm]
        if lam < 0.5:
            hard = hard[perm]
    return data, mx.nd.array(target), hard, target


def _soft_targets(labels, num_classes, smoothing):
    target = np.zeros((len(labels), num_classes), dtype=np.float32)
    target[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    if smoothing:
        target = target * (1.0 - smoothing) + smoothing / num_classes
    return target


def _train_step(run, batch, rng, epoch, nbatch):
    """One engine step on ``batch``, its metrics and the divergence check; returns its images."""
    n = run.batch_size - (batch.pad or 0)
    data, label, hard, target = _batch_targets(batch, run.cfg, rng, run.batch_size)
    run.engine.step(data, label)
    if run.lookahead is not None:
        run.lookahead.step(run.engine.live_params())
    if run.ema is not None:
        run.ema.step(run.engine.live_params())
    probs = run.engine.output().asnumpy()
    soft = None if target is None else target[:n]
    loss = run.train_metrics.update(probs[:n], hard[:n], soft)
    run.speedometer.window.update(probs[:n], hard[:n], soft)
    if not math.isfinite(loss):
        raise _diverged(run, epoch, nbatch, "the loss became %s" % loss)
    _require_finite(run, epoch, nbatch, nonfinite_params(run.engine))
    return n


def _require_finite(run, epoch, nbatch, bad_names):
    """TrainingDiverged when ``bad_names`` (parameters holding NaN/Inf) is not empty."""
    if bad_names:
        shown = ", ".join(bad_names[:3]) + (" and %d more" % (len(bad_names) - 3)
                                            if len(bad_names) > 3 else "")
        raise _diverged(run, epoch, nbatch, "parameters became NaN/Inf (%s)" % shown)


def _diverged(run, epoch, nbatch, what):
    return TrainingDiverged("%s at epoch %d (Epoch[%d]), batch %d; training stopped, nothing of "
                            "this epoch was saved; %s. Lower --lr or add warm-up (--warmup-epochs)"
                            % (what, epoch + 1, epoch, nbatch, _last_good(run)))


def _last_good(run):
    if run.last_saved and run.save_prefix:
        return "last good checkpoint: %s" % ckpt.checkpoint_paths(run.save_prefix,
                                                                  run.last_saved)["params"]
    return "no checkpoint saved yet"


def _validate(run, epoch, val_iter, record):
    """Evaluate on ``val_iter``, log it, add it to ``record`` and track the best epoch."""
    tic = time.time()
    with run.ema.applied(run.engine.live_params()) if run.ema else contextlib.nullcontext():
        metrics = _evaluate(run.engine, val_iter, run.val_metrics, run.cfg.tta)
    if run.cfg.val_sum is not None:  # each worker scored its shard: the metric of the whole set
        samples, correct, metrics.loss_sum = run.cfg.val_sum(
            [metrics.samples, metrics.correct, metrics.loss_sum])
        metrics.samples, metrics.correct = int(round(samples)), int(round(correct))
    record["val_time"] = time.time() - tic
    for name, value in metrics.name_value():
        run.log.info("Epoch[%d] Validation-%s=%f", epoch, name, value)
    record.update(val_loss=metrics.loss, val_error=1.0 - metrics.accuracy)
    if not run.best or metrics.accuracy > run.best.get("val_accuracy", -1):
        run.best = {"val_accuracy": metrics.accuracy, "epoch": epoch + 1}


def _evaluate(engine, val_iter, metrics, views=()):
    """Metrics of ``engine.predict`` on ``val_iter``; averaged over the TTA ``views`` if any."""
    val_iter.reset()
    metrics.reset()
    for batch in val_iter:
        n = batch.data[0].shape[0] - (batch.pad or 0)
        probs = tta.predict(engine.predict, batch.data[0], views)[:n]
        metrics.update(probs, batch.label[0].asnumpy()[:n])
    return metrics


def _save_epoch(run, done, record):
    """Write checkpoint ``done`` (params, optimizer state, training state) and log where."""
    cfg, engine = run.cfg, run.engine
    arg, aux = engine.get_params()
    _require_finite(run, done - 1, run.cfg.iters_per_epoch or 0,  # nothing non-finite is written
                    nonfinite_arrays(list(arg.items()) + list(aux.items())))
    state = dict(cfg.state_extra, num_update=run.num_update(), lr=record["lr"], best=run.best,
                 seed=cfg.seed, engine=engine.name, num_devices=len(run.contexts),
                 kvstore=kv_type(cfg.kvstore))
    with ckpt.saving(run.save_prefix, done):  # a failed write: one line, this epoch removed
        if run.ema is not None:  # .params: the average users evaluate; .live: what training resumes
            ema.save_weights(ckpt.checkpoint_paths(run.save_prefix, done)["live"], arg, aux)
            arg, aux = run.ema.params()
            state["ema"] = run.ema.state()
        if run.lookahead is not None:  # what --resume needs besides the live weights
            slow_path = ckpt.checkpoint_paths(run.save_prefix, done)["slow"]
            ema.save_weights(slow_path, *run.lookahead.params())
            state["lookahead"] = run.lookahead.state()
        paths = ckpt.save_checkpoint(run.save_prefix, done, run.save_symbol, arg, aux,
                                     engine.save_states if engine.can_save_states else None, state)
    run.last_saved = done
    run.log.info('Saved checkpoint to "%s" (%d epoch(s) completed; continue with --load-epoch %d)',
                 paths["params"], done, done)


def _progress_bar(epoch, total):
    from tqdm import tqdm
    return tqdm(total=total, desc="epoch %d" % (epoch + 1), unit="batch", leave=False,
                file=sys.stderr, dynamic_ncols=True)
