"""Train a registered network on CIFAR-10/100 RecordIO data, the way MXNet's example does.

    python train/train_cifar.py --network resnet --num-layers 110 --preset resnet110
    python train/train_cifar.py --network wrn --num-layers 28 --widen-factor 10 --preset wrn
    python train/train_cifar.py --network resnet --num-layers 20 --cpus 2 --batch-size 128
    python train/launch.py -n 2 -s 1 -- python train/train_cifar.py --kv-store dist_sync ...
    python train/train_cifar.py --network resnet --num-layers 56 --benchmark 1

Flags follow MXNet's ``example/image-classification`` (``options.py``); ``job.py`` checks
them; ``fit.py`` trains.  Checkpoints: ``PREFIX-NNNN.params`` holds the weights after NNNN
COMPLETED epochs, so ``--load-epoch 3`` loads ``PREFIX-0003.params`` and continues with
the 4th epoch (logged as ``Epoch[3]``: log epochs count from 0, as in MXNet).
"""
import os
import sys

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import train  # noqa: F401
    __package__ = "train"

from . import common, runtime

runtime.configure()  # before mxnet is imported

import math  # noqa: E402

from .job import default_prefix, prepare, resolve_data  # noqa: E402,F401
from .options import (DATASETS, KVSTORES, NET_OPTION_FLAGS, PROG, UsageError,  # noqa: E402,F401
                      apply_preset, build_parser, explicit_flags, network_options)

__all__ = ["build_parser", "explicit_flags", "apply_preset", "main", "UsageError"]


def _fail(message, code=2):
    return common.cli_error(PROG, message, code)


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args = apply_preset(args, explicit_flags(argv))
    if args.deterministic:
        os.environ.setdefault("MXNET_ENFORCE_DETERMINISM", "1")
    try:
        job = prepare(args)
    except common.UserError as err:  # bad input; any other exception is a bug and keeps its traceback
        return _fail(err)
    return run(job)


def run(job):
    """Train (or benchmark) the prepared job; returns the exit status."""
    import mxnet as mx
    from . import fit, progress
    args = job.args
    kv = mx.kv.create(args.kv_store) if args.kv_store.startswith("dist") else None
    rank, workers = (kv.rank, kv.num_workers) if kv else (0, 1)
    logger = progress.setup_logging(rank, args.log_file if rank == 0 else None)
    logger.info("start with arguments %s", vars(args))
    if args.deterministic:
        logger.info("deterministic mode: MXNET_ENFORCE_DETERMINISM=%s",
                    os.environ.get("MXNET_ENFORCE_DETERMINISM"))
    sym = _planned_symbol(job, logger)
    try:
        train_iter, val_iter, num_examples = _iterators(job, rank, workers)
    except common.UserError as err:
        return _fail(err)
    # every worker must run the same number of synchronous steps: the smallest shard decides
    iterators = common.sibling("data.iterators")
    sizes = [stop - start for start, stop in
             (iterators.part_range(num_examples, workers, k) for k in range(workers))]
    if min(sizes) < 1:
        return _fail("%d training images cannot be split over %d workers" % (num_examples, workers))
    iters_per_epoch = max(1, int(math.ceil(min(sizes) / float(args.batch_size))))
    config = _fit_config(job, kv, rank, workers, iters_per_epoch, logger)
    if job.begin_epoch:
        logger.info("resuming from %s-%04d.params: %d epoch(s) completed, continuing with Epoch[%d]%s",
                    job.prefix, job.begin_epoch, job.begin_epoch, job.begin_epoch,
                    "" if job.states_file else " (optimizer state not restored: saved by another "
                                                "engine/device count or not saved)")
    if not args.benchmark and rank == 0:
        logger.info("checkpoints: %s-NNNN.params after NNNN completed epochs", job.prefix)
    try:
        records = fit.fit(sym, train_iter, val_iter, config)
    except fit.TrainingDiverged as err:
        return _fail(err, code=1)
    except KeyboardInterrupt:
        return _fail("interrupted; the last checkpoint is intact", code=130)
    if args.benchmark and records:
        _log_benchmark(logger, job, records)
    return 0


def _planned_symbol(job, logger):
    """The symbol to train: as built, or with a memonger mirroring plan (``--memonger 1``)."""
    if not job.args.memonger:
        return job.symbol
    per_device = job.args.batch_size // len(job.contexts)
    sym = common.sibling("graph.memonger").plan(job.symbol, data=(per_device,) + job.image_shape)
    logger.info("memonger: planned mirroring for per-device batch %d; training with the module "
                "engine (the graph executor honours __force_mirroring__, gluon's CachedOp does not)",
                per_device)
    return sym


def _iterators(job, rank, workers):
    """``(train_iter, val_iter, training images)``: synthetic for --benchmark, else the .rec files."""
    from .job import count_examples
    args = job.args
    iterators = common.sibling("data.iterators")
    if args.benchmark:
        train_iter = iterators.SyntheticIter(args.batch_size, job.image_shape, args.num_classes,
                                             args.num_batches)
        return train_iter, None, args.batch_size * args.num_batches
    train_iter, val_iter = iterators.get_rec_iters(
        job.train_rec, job.val_rec, args.batch_size, image_shape=job.image_shape,
        stats=job.stats["path"] if job.stats else None, seed=args.seed,
        num_parts=workers, part_index=rank, num_classes=args.num_classes)
    return train_iter, val_iter, count_examples(job)


def _fit_config(job, kv, rank, workers, iters_per_epoch, logger):
    """The ``fit.FitConfig`` of the job's flags."""
    from . import fit
    args = job.args
    optimizer_params = {"learning_rate": args.lr, "wd": args.wd}
    if args.optimizer in ("sgd", "nag", "signum", "lbsgd"):
        optimizer_params["momentum"] = args.mom
    return fit.FitConfig(
        contexts=job.contexts, kvstore=kv or args.kv_store, engine=job.engine, fuse=not args.no_fusion,
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
                     "batch_size": args.batch_size, "num_workers": workers},
        best=job.state.get("best", {}), plot=not args.no_plot, logger=logger,
        max_batches=iters_per_epoch if workers > 1 else None)


def _log_benchmark(logger, job, records):
    speeds = sorted(r["img_per_sec"] for r in records)
    logger.info("benchmark: %s engine, %d device(s), batch %d: %.1f img/s (median of %d epochs)",
                job.engine, len(job.contexts), job.args.batch_size, speeds[len(speeds) // 2],
                len(speeds))


if __name__ == "__main__":
    sys.exit(main())
