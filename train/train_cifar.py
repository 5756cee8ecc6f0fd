"""Train a registered network on CIFAR-10/100 RecordIO data, the way MXNet's example does.

    python train/train_cifar.py --network resnet --num-layers 110 --preset resnet110
    python train/train_cifar.py --network wrn --num-layers 28 --widen-factor 10 --preset wrn
    python train/train_cifar.py --network resnet --num-layers 20 --cpus 2 --batch-size 128
    python distributed/launch.py -n 2 -s 1 -- python train/train_cifar.py --kv-store dist_sync ...
    python train/train_cifar.py --network resnet --num-layers 56 --benchmark 1

Flags follow MXNet's ``example/image-classification`` (``options.py``); ``job.py`` checks
them; ``fit.py`` trains.  Checkpoints: ``PREFIX-NNNN.params`` holds the weights after NNNN
COMPLETED epochs, so ``--load-epoch 3`` loads ``PREFIX-0003.params`` and continues with
the 4th epoch (logged as ``Epoch[3]``: log epochs count from 0, as in MXNet).
"""
import os
import sys

from mxcnn import common
from mxcnn.common import runtime

runtime.configure()  # before mxnet is imported

import math  # noqa: E402

from mxcnn.data import iterators, recfile  # noqa: E402
from mxcnn.train import finetune  # noqa: E402
from mxcnn.train.job import default_prefix, memory_message, prepare, resolve_data  # noqa: E402,F401
from mxcnn.train.options import (  # noqa: E402,F401
    DATASETS,
    KVSTORES,
    NET_OPTION_FLAGS,
    PROG,
    UsageError,
    apply_preset,
    build_parser,
    explicit_flags,
    network_options,
)
from mxcnn.train.run_prefix import check_ownership, clear_prefix, lock_prefix, unlock  # noqa: E402

__all__ = ["build_parser", "explicit_flags", "apply_preset", "main", "UsageError"]


def _fail(message, code=2):
    return common.cli_error(PROG, message, code)


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args = apply_preset(args, explicit_flags(argv))
    try:
        job = prepare(args)
    except common.UserError as err:  # bad input; any other exception is a bug and keeps its traceback
        return _fail(err)
    try:
        finetune.prepare(job)  # --pretrained, --freeze, --backbone-lr-mult
        job.augmentation = _augmentation(job)
    except common.UserError as err:
        unlock(job, refused=True)  # a refused run leaves no folder behind
        return _fail(err)
    if args.deterministic:  # read when operators are created: before the bind is soon enough
        for key, value in runtime.deterministic_env(job.contexts).items():
            os.environ.setdefault(key, value)
    try:
        return run(job)
    finally:
        unlock(job)  # the next run on this --model-prefix may start


def run(job):
    """Train (or benchmark) the prepared job; returns the exit status.

    Under a dist_* kvstore a worker that fails ends its process at once (``os._exit``) with
    the status: otherwise MXNet's KVStoreDist destructor waits for the pending pushes and in
    a ``Barrier()`` that the peers, waiting for this worker's gradients, never reach.
    """
    import mxnet as mx
    kv = mx.kv.create(job.args.kv_store) if job.args.kv_store.startswith("dist") else None
    if kv is None:
        return _train(job, None)
    try:
        code = _train(job, kv)
    except KeyboardInterrupt:
        _exit_now("interrupted", 130)
    except SystemExit as exc:
        _exit_now(None, exc.code if isinstance(exc.code, int) else 1)
    except BaseException:  # logged whole, then no destructor runs: no barrier to hang in
        import traceback
        traceback.print_exc()
        _exit_now("this worker failed (traceback above)", 1)
    if code:
        _exit_now(None, code)
    return code


def _exit_now(message, code):
    """Flush everything and leave without running destructors (dist kvstore: no Barrier)."""
    import logging
    if message:
        sys.stderr.write("%s: %s; exiting with status %d without waiting for the other workers\n"
                         % (PROG, message, code))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _train(job, kv):
    """The training run of ``run`` (``kv``: the dist kvstore or None); its exit status."""
    import mxnet as mx

    from mxcnn.train import fit, progress
    args = job.args
    rank, workers = (kv.rank, kv.num_workers) if kv else (0, 1)
    logger = progress.setup_logging(rank, args.log_file if rank == 0 else None)
    logger.info("start with arguments %s", vars(args))
    if job.dtype_note:
        logger.info(job.dtype_note)
    if args.deterministic:
        logger.info("deterministic mode: %s", " ".join(
            "%s=%s" % (key, os.environ.get(key)) for key in runtime.deterministic_env(job.contexts)))
    code = _own_prefix(job, kv, rank) or _resume_across_workers(job, kv, rank, logger)
    if code:
        return code
    sym = _planned_symbol(job, logger)
    try:
        train_iter, val_iter, num_examples = _iterators(job, rank, workers)
    except common.UserError as err:
        return _fail(err)
    # every worker must run the same number of synchronous steps: the smallest shard decides
    sizes = [stop - start for start, stop in
             (iterators.part_range(num_examples, workers, k) for k in range(workers))]
    if min(sizes) < 1:
        return _fail("%d training images cannot be split over %d workers" % (num_examples, workers))
    iters_per_epoch = max(1, int(math.ceil(min(sizes) / float(args.batch_size))))
    config = _fit_config(job, kv, rank, workers, iters_per_epoch, logger)
    if getattr(val_iter, "sharded", False):  # each worker scores its part of the validation set
        config.val_sum = _worker_sum(kv, "mxcnn_val_metrics", 3)
    _recipe_options(config, job, train_iter, logger)
    sym = finetune.configure(config, job, sym, logger)
    if not args.benchmark:
        logger.info("augmentation: %s (%s)", *job.augmentation)
    if job.begin_epoch:
        logger.info("resuming from %s-%04d.params: %d epoch(s) completed, continuing with Epoch[%d]%s",
                    job.resume_prefix, job.begin_epoch, job.begin_epoch, job.begin_epoch,
                    "" if job.states_file else " (optimizer state NOT restored, momentum starts at "
                    "zero: %s)" % job.states_note)
    if not args.benchmark and rank == 0:
        clear_prefix(job, logger)  # --overwrite, a killed save's leftovers: before anything is written
        logger.info("checkpoints: %s-NNNN.params after NNNN completed epochs", job.prefix)
    try:
        records = fit.fit(sym, train_iter, val_iter, config)
    except fit.TrainingDiverged as err:
        return _fail(err, code=1)
    except common.UserError as err:  # e.g. a full disk during a save: the last epoch is intact
        return _fail(err)
    except (MemoryError, mx.base.MXNetError) as err:
        if not _out_of_memory(err):
            raise
        return _fail(memory_message(job))
    except KeyboardInterrupt:
        return _fail("interrupted; the last checkpoint is intact", code=130)
    if args.benchmark and records:
        _log_benchmark(logger, job, records)
    return 0


def _own_prefix(job, kv, rank):
    """A dist job's rank 0 takes the prefix's lock once it knows its rank, then checks again
    that no other run wrote there meanwhile (``job.prepare`` did it without the lock); the
    exit status (0: go on)."""
    if kv is None or rank or job.args.benchmark:
        return 0  # a single-process run holds the lock since job.prepare
    try:
        lock_prefix(job)
        check_ownership(job)
    except common.UserError as err:
        unlock(job, refused=True)
        return _fail(err)
    return 0


def _out_of_memory(err):
    """True for a failed allocation: numpy's MemoryError, MXNet's CPU or CUDA allocator."""
    text = str(err).lower()
    return isinstance(err, MemoryError) or "failed to allocate" in text or "out of memory" in text


def _planned_symbol(job, logger):
    """The symbol to train: as built, or with a memonger mirroring plan (``--memonger 1``)."""
    if not job.args.memonger:
        return job.symbol
    per_device = job.args.batch_size // len(job.contexts)
    # measured on the training device: a GPU plan binds on the GPU (graph/memonger.py)
    from mxcnn.graph import memonger
    sym = memonger.plan(job.symbol, ctx=job.contexts,
                        data=(per_device,) + job.image_shape)
    logger.info("memonger: planned mirroring for per-device batch %d; training with the module "
                "engine (the graph executor honours __force_mirroring__, gluon's CachedOp does not)",
                per_device)
    return sym


def _iterators(job, rank, workers):
    """``(train_iter, val_iter, training images)``: synthetic for --benchmark, else the .rec files."""
    from mxcnn.train.job import count_examples
    args = job.args
    if args.benchmark:
        train_iter = iterators.SyntheticIter(args.batch_size, job.image_shape, args.num_classes,
                                             args.num_batches)
        return train_iter, None, args.batch_size * args.num_batches
    train_iter, val_iter = iterators.get_rec_iters(
        job.train_rec, job.val_rec, args.batch_size, image_shape=job.image_shape,
        stats=job.stats["path"] if job.stats else None, seed=args.seed,
        num_parts=workers, part_index=rank, num_classes=args.num_classes, pad=args.crop_pad,
        pad_mode=args.crop_pad_mode, rand_mirror=True if args.flip == "random" else args.flip,
        preprocess_threads=args.data_nthreads, shard_val=_shard_val(job, workers),
        augmentation=job.augmentation[0], color_jitter=args.color_jitter, **_gpu_input(job))
    if val_iter is not None:
        val_iter.sharded = _shard_val(job, workers)
    return train_iter, val_iter, count_examples(job)


def _augmentation(job):
    """``(cifar|imagenet, why)``: ``--augment``, or for ``auto`` ImageNet-style augmentation
    for ImageNet layouts and for stored images not of ``--image-shape``'s size (or of several
    sizes), else the CIFAR way.  UsageError for --color-jitter out of range or without it."""
    from mxcnn import symbols
    args = job.args
    if not 0 <= args.color_jitter < 1:
        raise UsageError("--color-jitter must be in [0, 1) (torchvision uses 0.4), got %r"
                         % args.color_jitter)
    stored = job.stats.get("image_shape") if job.stats else None
    style = symbols.layers.infer_style(job.image_shape, network_options(args).get("style"))
    if args.augment != "auto":
        choice = (args.augment, "--augment %s" % args.augment)
    elif style == "imagenet":
        choice = ("imagenet", "ImageNet layout at %dx%d" % job.image_shape[1:])
    elif job.stats and not stored:
        choice = ("imagenet", "the stored images have several sizes")
    elif stored and tuple(stored)[1:] != tuple(job.image_shape)[1:]:
        choice = ("imagenet", "stored %dx%d, --image-shape %dx%d"
                  % (stored[2], stored[1], job.image_shape[2], job.image_shape[1]))
    else:
        choice = ("cifar", "pad %d + crop + flip, as stored" % args.crop_pad)
    if args.color_jitter and choice[0] != "imagenet":
        raise UsageError("--color-jitter applies to --augment imagenet only (this run augments "
                         "the CIFAR way: %s)" % choice[1])
    return choice


def _shard_val(job, workers):
    """dist_sync with 2+ workers and at least one validation image each: every worker scores
    its shard and the metrics are summed over workers (``fit.FitConfig.val_sum``)."""
    if workers < 2 or "async" in job.args.kv_store or not job.val_rec:
        return False
    return recfile.count_records(job.val_rec) >= workers


def _gpu_input(job):
    """On GPUs the in-memory iterator assembles 2 batches ahead on a thread, into page-locked
    memory (a DMA to the device).  On CPUs it stays in the training thread: there it costs
    about 2% of a step (tens of thousands of images/s, data/iterators.py, against ~470 img/s
    of ResNet-20 training on 2 cores), and a thread would take cores from the step."""
    on_gpu = any(ctx.device_type == "gpu" for ctx in job.contexts)
    return {"prefetch": 2, "pin_memory": True} if on_gpu else {}


def _resume_across_workers(job, kv, rank, logger):
    """dist: a worker resumes from its own per-rank copy when its host has it, and every
    worker must resume from the same epoch (else one line and exit 2 on all of them)."""
    if kv is None:
        return 0
    from mxcnn.train.job import use_rank_copy
    try:
        if rank and use_rank_copy(job, rank):
            logger.info("worker %d resumes from its own copy %s", rank, job.resume_prefix)
    except common.UserError as err:
        return _fail(err)
    if "async" in kv.type:  # async servers need an optimizer before any push
        return 0
    total, squares = _sum_over_workers(kv, "mxcnn_resume_epoch", [job.begin_epoch,
                                                                  job.begin_epoch ** 2])
    if total * total != kv.num_workers * squares:  # not all equal (zero variance test)
        return _fail("the %d workers would resume from different epochs (this one from %d, the "
                     "mean is %.2f): every host needs the same checkpoint; pass --load-epoch N "
                     "with an epoch all hosts have" % (kv.num_workers, job.begin_epoch,
                                                       total / kv.num_workers))
    return 0


def _sum_over_workers(kv, key, values):
    """Element-wise sum of ``values`` over the workers of a dist_sync kvstore (once)."""
    return _worker_sum(kv, key, len(values))(values)


def _worker_sum(kv, key, size):
    """``f(values) -> element-wise sums over the workers``, for ``size`` values at a time.

    Every worker must make this call (``kv.init`` is collective), and then call ``f`` the
    same number of times.  A dist_sync server without an optimizer keeps the sum of a
    round's pushes, which each pull returns (MXNet's KVStoreDistServer default handle).
    """
    import mxnet as mx
    kv.init(key, mx.nd.zeros(size))

    def total(values):
        out = mx.nd.zeros(size)
        kv.push(key, mx.nd.array(values))
        kv.pull(key, out=out)
        return [float(v) for v in out.asnumpy()]
    return total


def _fit_config(job, kv, rank, workers, iters_per_epoch, logger):
    """The ``fit.FitConfig`` of the job's flags; each checkpoint's .json records the run's
    preprocessing (``predict.preprocess_record``) so that score.py needs no stats file."""
    from mxcnn.inference.predict import preprocess_record
    from mxcnn.train import fit
    args = job.args
    optimizer_params = {"learning_rate": args.lr, "wd": args.wd}
    if args.optimizer in ("sgd", "nag", "signum", "lbsgd"):
        optimizer_params["momentum"] = args.mom
    return fit.FitConfig(
        contexts=job.contexts, kvstore=kv or args.kv_store, engine=job.engine, fuse=not args.no_fusion,
        dtype=args.dtype,
        batch_size=args.batch_size, num_classes=args.num_classes, num_epochs=args.num_epochs,
        begin_epoch=job.begin_epoch, optimizer=args.optimizer, optimizer_params=optimizer_params,
        lr_scheduler_args=dict(mode=args.lr_scheduler, step_epochs=args.step_epochs,
                               factor=args.lr_factor, warmup_epochs=args.warmup_epochs,
                               warmup_iters=args.warmup_iters, warmup_lr=args.warmup_lr,
                               warmup_mode=args.warmup_mode),
        iters_per_epoch=iters_per_epoch, arg_params=job.arg_params, aux_params=job.aux_params,
        states_file=job.states_file,
        begin_num_update=job.state.get("num_update", job.begin_epoch * iters_per_epoch),
        label_smoothing=args.label_smoothing, mixup_alpha=args.mixup_alpha, seed=args.seed,
        rank=rank, num_workers=workers, model_prefix=None if args.benchmark else job.prefix,
        save_period=args.save_period, disp_batches=args.disp_batches, save_symbol=job.symbol,
        state_extra={"network": args.network, "num_layers": args.num_layers,
                     "batch_size": args.batch_size, "num_workers": workers, "dtype": args.dtype,
                     "preprocess": preprocess_record(job.image_shape, job.stats, args.num_classes,
                                                     job.augmentation[0])},
        best=job.state.get("best", {}), plot=not args.no_plot, logger=logger,
        max_batches=iters_per_epoch if workers > 1 else None)


def _recipe_options(config, job, train_iter, logger):
    """The fast recipe's options on ``config`` (any network): final lr, weight EMA, TTA,
    BatchNorm-bias lr multiplier, and the images for ``__data_init__`` on a fresh run."""
    from mxcnn.train import data_init
    args = job.args
    config.lr_scheduler_args["final_lr"] = args.final_lr
    config.ema_decay, config.ema_every = args.ema_decay, args.ema_every
    config.ema_resume, config.tta = job.ema_resume, args.tta_views
    config.lookahead_every, config.lookahead_decay = args.lookahead_every, args.lookahead_decay
    config.lookahead_resume = job.lookahead_resume
    if args.bn_bias_lr_mult != 1.0:
        betas = [n for n in job.symbol.list_arguments() if n.endswith("_beta")]
        config.lr_multipliers = {name: args.bn_bias_lr_mult for name in betas}
    if job.arg_params is None and data_init.requested(job.symbol):
        if args.benchmark:
            logger.info("data init: --benchmark keeps the initializer's values (synthetic data)")
        else:
            config.init_images = data_init.sample_images(train_iter)


def _log_benchmark(logger, job, records):
    speeds = sorted(r["img_per_sec"] for r in records)
    logger.info("benchmark: %s engine, %d device(s), batch %d: %.1f img/s (median of %d epochs)",
                job.engine, len(job.contexts), job.args.batch_size, speeds[len(speeds) // 2],
                len(speeds))


if __name__ == "__main__":
    sys.exit(main())
