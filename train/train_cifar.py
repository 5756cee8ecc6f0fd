"""Train a registered network on CIFAR-10/100 RecordIO data, the way MXNet's example does.

    python train/train_cifar.py --network resnet --num-layers 110 --preset resnet110
    python train/train_cifar.py --network wrn --num-layers 28 --widen-factor 10 --preset wrn
    python train/train_cifar.py --network resnet --num-layers 20 --cpus 2 --batch-size 128
    python train/launch.py -n 2 -s 1 -- python train/train_cifar.py --kv-store dist_sync ...
    python train/train_cifar.py --network resnet --num-layers 56 --benchmark 1

Flags follow MXNet's ``example/image-classification`` (``common/fit.py``,
``train_cifar10.py``).  Checkpoints: ``PREFIX-NNNN.params`` holds the weights after NNNN
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

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

from .presets import PRESETS, describe as describe_presets  # noqa: E402

__all__ = ["build_parser", "explicit_flags", "apply_preset", "main", "UsageError"]

PROG = "train_cifar.py"
DATASETS = {"cifar10": 10, "cifar100": 100}
RECORDIO_MAGIC = b"\x0a\x23\xd7\xce"  # 0xced7230a, little endian
KVSTORES = ("local", "device", "nccl", "dist_sync", "dist_device_sync", "dist_async")

#: Family options with their own flag (anything else: --net-option key=value).
NET_OPTION_FLAGS = (("--widen-factor", int, "WRN widening factor k"),
                    ("--shortcut-type", str, "ResNet shortcut A|B|C (He et al. 2016, Sec. 3.3)"),
                    ("--growth-rate", int, "DenseNet growth rate k"),
                    ("--cardinality", int, "ResNeXt cardinality C"),
                    ("--bottleneck-width", int, "ResNeXt bottleneck width d"),
                    ("--reduction", float, "DenseNet-BC transition compression"),
                    ("--multiplier", float, "MobileNet width multiplier"),
                    ("--style", str, "stem layout cifar|imagenet (default: by image size)"))


class UsageError(common.UserError):
    """Bad command-line input; printed as one line, exit status 2."""


def build_parser(suppress_defaults=False):
    """The argument parser; with ``suppress_defaults`` only flags given end up in the namespace."""
    default = (lambda value: argparse.SUPPRESS) if suppress_defaults else (lambda value: value)
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an image-classification CNN on CIFAR-10/100 (.rec files from "
                    "data/prepare_cifar.py) with MXNet.",
        epilog="presets (explicit flags override them):\n" + describe_presets() +
               "\n\ncheckpoints: PREFIX-symbol.json, and after N completed epochs PREFIX-NNNN.params,"
               "\n.states (optimizer) and .json (training state). --load-epoch N / --resume continue"
               "\nwith epoch N+1; the log numbers epochs from 0 (Epoch[N] is the (N+1)-th epoch).")
    add = parser.add_argument
    g = parser.add_argument_group("network")
    g.add_argument("--network", default=default("resnet"), help="registered network (default resnet)")
    g.add_argument("--num-layers", type=int, default=default(None), help="depth, e.g. 20/56/110/164")
    g.add_argument("--num-classes", type=int, default=default(None),
                   help="classes (default: from the data's _stats.json, else 10/100 by --dataset)")
    g.add_argument("--image-shape", default=default("3,32,32"), help="C,H,W (default 3,32,32)")
    g.add_argument("--dropout", type=float, default=default(None), help="dropout rate (if the family has one)")
    for flag, kind, text in NET_OPTION_FLAGS:
        g.add_argument(flag, type=kind, default=default(None), help=text)
    g.add_argument("--net-option", action="append", default=default([]), metavar="KEY=VALUE",
                   help="any other option of the family's get_symbol (repeatable)")
    g.add_argument("--deep-supervision", default=default(None), metavar="NAME:WEIGHT,...",
                   help="auxiliary heads at internal outputs (symbols.deep_supervision)")
    g.add_argument("--memonger", type=int, default=default(0),
                   help="1: plan memory mirroring (graph.memonger); uses the module engine")
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=sorted(DATASETS), default=default("cifar10"))
    g.add_argument("--data-dir", default=default(None),
                   help="folder with <dataset>_train.rec/_val.rec/_stats.json "
                        "(default ~/.mxnet/datasets/<dataset>)")
    g.add_argument("--data-train", default=default(None), help="training .rec (default from --data-dir)")
    g.add_argument("--data-val", default=default(None), help="validation .rec (default from --data-dir)")
    g.add_argument("--num-examples", type=int, default=default(None),
                   help="training images (default: counted from the data)")
    g.add_argument("--benchmark", type=int, default=default(0),
                   help="1: synthetic data, report speed only (no data files, no checkpoints)")
    g.add_argument("--num-batches", type=int, default=default(50), help="batches per --benchmark epoch")
    g = parser.add_argument_group("devices")
    g.add_argument("--gpus", default=default(None), help="GPU ids, e.g. 0,1 (default: CPU)")
    g.add_argument("--cpus", type=int, default=default(None),
                   help="data-parallel over N CPU contexts (the multi-device path without GPUs)")
    g.add_argument("--kv-store", default=default("device"),
                   help="local, device, dist_sync, dist_device_sync or dist_async")
    g.add_argument("--engine", choices=("module", "gluon"), default=default(None),
                   help="module (mx.mod.Module) or gluon (hybridized SymbolBlock); default %s"
                        % "module")
    g.add_argument("--no-fusion", action="store_true", default=default(False),
                   help="bind the graph as built: no BatchNorm+ReLU fusion on oneDNN CPUs "
                        "(graph.fusion; checkpoints are the same either way)")
    g = parser.add_argument_group("optimization")
    g.add_argument("--preset", choices=sorted(PRESETS), default=default(None))
    g.add_argument("--batch-size", type=int, default=default(128), help="per worker, split over devices")
    g.add_argument("--num-epochs", type=int, default=default(164))
    g.add_argument("--optimizer", default=default("sgd"), help="sgd, nag, adam, ... (mx.optimizer)")
    g.add_argument("--lr", type=float, default=default(0.1))
    g.add_argument("--lr-scheduler", choices=("step", "cosine"), default=default("step"))
    g.add_argument("--lr-factor", type=float, default=default(0.1))
    g.add_argument("--lr-step-epochs", default=default("82,123"), help="epochs after which lr *= factor")
    g.add_argument("--warmup-epochs", type=float, default=default(0.0))
    g.add_argument("--warmup-iters", type=int, default=default(0), help="warm-up updates (if no --warmup-epochs)")
    g.add_argument("--warmup-lr", type=float, default=default(0.0))
    g.add_argument("--warmup-mode", choices=("linear", "constant"), default=default("linear"))
    g.add_argument("--mom", type=float, default=default(0.9))
    g.add_argument("--wd", type=float, default=default(1e-4))
    g.add_argument("--label-smoothing", type=float, default=default(0.0))
    g.add_argument("--mixup-alpha", type=float, default=default(0.0))
    g.add_argument("--seed", type=int, default=default(0))
    g.add_argument("--deterministic", type=int, default=default(0),
                   help="1: MXNET_ENFORCE_DETERMINISM=1 (exact resume; seeds are always fixed)")
    g = parser.add_argument_group("checkpoints and logs")
    g.add_argument("--model-prefix", default=default(None),
                   help="checkpoint/log prefix (default runs/<dataset>-<network><layers>/model)")
    g.add_argument("--save-period", type=int, default=default(1), help="checkpoint every N epochs")
    g.add_argument("--load-epoch", type=int, default=default(None),
                   help="load PREFIX-NNNN.params (N completed epochs) and continue with epoch N+1")
    g.add_argument("--resume", action="store_true", default=default(False),
                   help="continue from the newest complete checkpoint of --model-prefix")
    g.add_argument("--disp-batches", type=int, default=default(20), help="speed line every N batches")
    g.add_argument("--log-file", default=default(None), help="also write the log here")
    g.add_argument("--no-plot", action="store_true", default=default(False), help="skip the curves PNG")
    return parser


def explicit_flags(argv):
    """Destinations the user actually passed on the command line."""
    parser = build_parser(suppress_defaults=True)
    parser.error = lambda message: None  # the real parser reports errors
    try:
        namespace, _ = parser.parse_known_args(argv)
    except SystemExit:
        return set()
    return set(vars(namespace))


def apply_preset(args, explicit):
    """Fill in ``args.preset``'s values for every flag not given explicitly."""
    if not args.preset:
        return args
    for key, value in PRESETS[args.preset]["values"].items():
        if key not in explicit:
            setattr(args, key, value)
    return args


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def network_options(args):
    """The keyword options for ``symbols.get_symbol`` given on the command line."""
    options = {}
    for flag, _, _ in NET_OPTION_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            options[flag[2:].replace("-", "_")] = value
    if args.dropout is not None:
        options["dropout"] = args.dropout
    for item in args.net_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError("--net-option %r is not KEY=VALUE (e.g. --net-option bottleneck=True)" % item)
        options[key.strip().replace("-", "_")] = _parse_value(value.strip())
    if args.deep_supervision:
        options["deep_supervision"] = args.deep_supervision
    return options


def _check_rec(path, flag):
    if not os.path.isfile(path):
        raise UsageError("%s %s does not exist; make it with `python data/prepare_cifar.py "
                         "--dataset cifar10` or pass --data-dir/%s" % (flag, path, flag))
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as err:
        raise UsageError("cannot read %s %s (%s); check its permissions" % (flag, path, err.strerror))
    if head != RECORDIO_MAGIC:
        raise UsageError("%s %s is not a RecordIO file (bad magic); convert the data again with "
                         "data/prepare_cifar.py" % (flag, path))


def _stats_path(rec_path):
    folder, base = os.path.split(rec_path)
    for suffix in ("_train.rec", "_val.rec", ".rec"):
        if base.endswith(suffix):
            return os.path.join(folder, base[: -len(suffix)] + "_stats.json")
    return None


def resolve_data(args):
    """Check the data files; return (train_rec, val_rec, stats dict or None)."""
    data_dir = os.path.expanduser(args.data_dir or os.path.join("~", ".mxnet", "datasets", args.dataset))
    train_rec = args.data_train or os.path.join(data_dir, "%s_train.rec" % args.dataset)
    val_rec = args.data_val or os.path.join(data_dir, "%s_val.rec" % args.dataset)
    _check_rec(train_rec, "--data-train")
    if val_rec:
        _check_rec(val_rec, "--data-val")
    stats = None
    stats_file = _stats_path(train_rec)
    if stats_file and os.path.exists(stats_file):
        try:
            with open(stats_file) as handle:
                stats = json.load(handle)
        except (OSError, ValueError) as err:
            raise UsageError("cannot read %s (%s); convert the data again" % (stats_file, err))
        stats["path"] = stats_file
    return train_rec, val_rec, stats


def default_prefix(args):
    depth = "" if args.num_layers is None else str(args.num_layers)
    return os.path.join("runs", "%s-%s%s" % (args.dataset, args.network, depth), "model")


def _submodule(package, name):
    """``package.name`` of a sibling, imported late: MXNet must load after runtime.configure()."""
    return common.sibling(package + "." + name)


def _fail(message, code=2):
    print("%s: error: %s" % (PROG, message), file=sys.stderr)
    return code


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args = apply_preset(args, explicit_flags(argv))
    if args.deterministic:
        os.environ.setdefault("MXNET_ENFORCE_DETERMINISM", "1")
    try:
        job = prepare(args)
    except ValueError as err:  # UsageError, CheckpointError, data.errors.DataError, registry errors
        return _fail(str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
    return run(job)


class _Job:
    pass


def prepare(args):
    """Validate everything that can be checked before training; return the job to run.

    Raises ValueError (one line) for bad input, before any data is read or model bound.
    """
    from . import checkpoint as ckpt
    job = _Job()
    job.args = args
    if args.batch_size < 1:
        raise UsageError("--batch-size must be positive, got %d" % args.batch_size)
    if args.num_epochs < 1:
        raise UsageError("--num-epochs must be positive, got %d" % args.num_epochs)
    if args.load_epoch is not None and args.resume:
        raise UsageError("give --load-epoch N or --resume, not both")
    if args.load_epoch is not None and args.load_epoch < 0:
        raise UsageError("--load-epoch must be >= 0 (the number of completed epochs)")
    try:
        job.step_epochs = [float(e) for e in str(args.lr_step_epochs or "").split(",") if e.strip()]
    except ValueError:
        raise UsageError("--lr-step-epochs %r is not a comma-separated list of epochs, e.g. 82,123"
                         % args.lr_step_epochs)
    symbols = common.sibling("symbols")
    symbols.family_module(args.network)  # unknown network: fail before anything else
    job.image_shape = symbols.layers.as_image_shape(args.image_shape)
    options = network_options(args)

    if args.kv_store not in KVSTORES:
        raise UsageError("--kv-store %r is not one of: %s" % (args.kv_store, ", ".join(KVSTORES)))
    if args.kv_store.startswith("dist") and "DMLC_PS_ROOT_URI" not in os.environ:
        raise UsageError("--kv-store %s needs the DMLC_* environment of a launcher: run python "
                         "train/launch.py -n WORKERS -s SERVERS -- python train/train_cifar.py ..."
                         % args.kv_store)
    from . import fit
    job.contexts = fit.parse_devices(args.gpus, args.cpus)
    if args.batch_size % len(job.contexts):
        raise UsageError("--batch-size %d is not divisible by the %d devices; use a multiple of %d"
                         % (args.batch_size, len(job.contexts), len(job.contexts)))
    job.engine = args.engine or fit.DEFAULT_ENGINE
    if args.memonger and job.engine != "module":
        raise UsageError("--memonger needs --engine module: MXNet 1.9.1's CachedOp (gluon) builds its "
                         "backward graph without a mirror function, so __force_mirroring__ is ignored")

    job.stats = None
    job.train_rec = job.val_rec = None
    if not args.benchmark:
        job.train_rec, job.val_rec, job.stats = resolve_data(args)
    data_classes = job.stats.get("num_classes") if job.stats else None
    if args.num_classes is None:
        args.num_classes = int(data_classes or DATASETS[args.dataset])
    elif data_classes is not None and int(data_classes) != args.num_classes:
        raise UsageError("--num-classes %d disagrees with the data: %s lists %d classes; drop "
                         "--num-classes or use the matching data" % (args.num_classes, job.stats["path"], data_classes))
    if job.stats and job.stats.get("image_shape") and \
            tuple(job.stats["image_shape"])[0] != job.image_shape[0]:
        raise UsageError("--image-shape %s has %d channels but the data has %d"
                         % (args.image_shape, job.image_shape[0], job.stats["image_shape"][0]))

    job.symbol = symbols.get_symbol(args.network, num_classes=args.num_classes,
                                    num_layers=args.num_layers, image_shape=job.image_shape, **options)
    job.prefix = args.model_prefix or default_prefix(args)
    job.begin_epoch, job.state, job.arg_params, job.aux_params, job.states_file = 0, {}, None, None, None
    load_epoch = args.load_epoch
    if args.resume:
        load_epoch = ckpt.latest_epoch(job.prefix)
        if load_epoch is None:
            raise UsageError("--resume: no complete checkpoint under --model-prefix %s (expected %s)"
                             % (job.prefix, ckpt.checkpoint_paths(job.prefix, 1)["params"]))
    if load_epoch is not None:
        if load_epoch >= args.num_epochs:
            raise UsageError("checkpoint %d already has --num-epochs %d epochs; raise --num-epochs"
                             % (load_epoch, args.num_epochs))
        if load_epoch > 0:
            _, job.arg_params, job.aux_params = ckpt.load_params(job.prefix, load_epoch)
            wanted = set(job.symbol.list_arguments()) - {"data"} - set(fit.label_names(job.symbol))
            missing = sorted(wanted - set(job.arg_params))
            if missing:
                raise UsageError("checkpoint %s does not fit this network (no %s); check --network/"
                                 "--num-layers/--model-prefix" % (ckpt.checkpoint_paths(job.prefix, load_epoch)
                                                                  ["params"], ", ".join(missing[:3])))
            _check_shapes(job, load_epoch)
            job.state = ckpt.load_state(job.prefix, load_epoch)
            states = ckpt.checkpoint_paths(job.prefix, load_epoch)["states"]
            same_layout = job.state.get("engine", job.engine) == job.engine and \
                job.state.get("num_devices", len(job.contexts)) == len(job.contexts)
            job.states_file = states if os.path.exists(states) and same_layout else None
            job.begin_epoch = load_epoch
    return job


def _check_shapes(job, epoch):
    from . import fit
    shapes = fit.input_shapes(job.symbol, (1,) + job.image_shape, (1,))
    arg_shapes, _, aux_shapes = job.symbol.infer_shape(**shapes)
    expected = dict(zip(job.symbol.list_arguments(), arg_shapes))
    expected.update(zip(job.symbol.list_auxiliary_states(), aux_shapes))
    for name, value in list(job.arg_params.items()) + list(job.aux_params.items()):
        if name in expected and tuple(value.shape) != tuple(expected[name]):
            raise UsageError("checkpoint %s-%04d.params does not fit this network: %s is %s, the "
                             "network needs %s; check --network/--num-layers and the network options"
                             % (job.prefix, epoch, name, tuple(value.shape), tuple(expected[name])))


def _count_examples(job):
    args = job.args
    if args.num_examples:
        return args.num_examples
    if job.stats and job.stats.get("num_train") and not args.data_train:
        return int(job.stats["num_train"])
    return _submodule("data", "recfile").count_records(job.train_rec)


def run(job):
    """Train (or benchmark) the prepared job; returns the exit status."""
    import mxnet as mx
    from . import fit, progress
    iterators = _submodule("data", "iterators")
    args = job.args
    kv = mx.kv.create(args.kv_store) if args.kv_store.startswith("dist") else None
    rank, workers = (kv.rank, kv.num_workers) if kv else (0, 1)
    logger = progress.setup_logging(rank, args.log_file if rank == 0 else None)
    logger.info("start with arguments %s", vars(args))
    if args.deterministic:
        logger.info("deterministic mode: MXNET_ENFORCE_DETERMINISM=%s",
                    os.environ.get("MXNET_ENFORCE_DETERMINISM"))
    per_device = args.batch_size // len(job.contexts)
    sym = job.symbol
    if args.memonger:
        sym = _submodule("graph", "memonger").plan(sym, data=(per_device,) + job.image_shape)
        logger.info("memonger: planned mirroring for per-device batch %d; training with the module "
                    "engine (the graph executor honours __force_mirroring__, gluon's CachedOp does not)",
                    per_device)

    if args.benchmark:
        train_iter = iterators.SyntheticIter(args.batch_size, job.image_shape, args.num_classes,
                                                  args.num_batches)
        val_iter, num_examples = None, args.batch_size * args.num_batches
    else:
        errors = _submodule("data", "errors")
        try:
            train_iter, val_iter = iterators.get_rec_iters(
                job.train_rec, job.val_rec, args.batch_size, image_shape=job.image_shape,
                stats=job.stats["path"] if job.stats else None, seed=args.seed,
                num_parts=workers, part_index=rank, num_classes=args.num_classes)
        except errors.DataError as err:
            return _fail(str(err))
        num_examples = _count_examples(job)
    # every worker must run the same number of synchronous steps: the smallest shard decides
    sizes = [stop - start for start, stop in
             (iterators.part_range(num_examples, workers, k) for k in range(workers))]
    if min(sizes) < 1:
        return _fail("%d training images cannot be split over %d workers" % (num_examples, workers))
    iters_per_epoch = max(1, int(math.ceil(min(sizes) / float(args.batch_size))))
    optimizer_params = {"learning_rate": args.lr, "wd": args.wd}
    if args.optimizer in ("sgd", "nag", "signum", "lbsgd"):
        optimizer_params["momentum"] = args.mom
    config = fit.FitConfig(
        contexts=job.contexts, kvstore=kv or args.kv_store, engine=job.engine, fuse=not args.no_fusion,
        batch_size=args.batch_size, num_classes=args.num_classes, num_epochs=args.num_epochs,
        begin_epoch=job.begin_epoch, optimizer=args.optimizer, optimizer_params=optimizer_params,
        lr_scheduler_args=dict(mode=args.lr_scheduler, step_epochs=job.step_epochs,
                               factor=args.lr_factor, warmup_epochs=args.warmup_epochs,
                               warmup_iters=args.warmup_iters, warmup_lr=args.warmup_lr,
                               warmup_mode=args.warmup_mode),
        iters_per_epoch=iters_per_epoch, arg_params=job.arg_params, aux_params=job.aux_params,
        states_file=job.states_file, begin_num_update=job.state.get("num_update", job.begin_epoch * iters_per_epoch),
        label_smoothing=args.label_smoothing, mixup_alpha=args.mixup_alpha, seed=args.seed,
        rank=rank, num_workers=workers, model_prefix=None if args.benchmark else job.prefix,
        save_period=args.save_period, disp_batches=args.disp_batches, save_symbol=job.symbol,
        state_extra={"network": args.network, "num_layers": args.num_layers,
                     "batch_size": args.batch_size, "num_workers": workers},
        best=job.state.get("best", {}), plot=not args.no_plot, logger=logger,
        max_batches=iters_per_epoch if workers > 1 else None)
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
        return _fail(str(err), code=1)
    except KeyboardInterrupt:
        return _fail("interrupted; the last checkpoint is intact", code=130)
    if args.benchmark and records:
        speeds = [r["img_per_sec"] for r in records]
        logger.info("benchmark: %s engine, %d device(s), batch %d: %.1f img/s (median of %d epochs)",
                    job.engine, len(job.contexts), args.batch_size, sorted(speeds)[len(speeds) // 2],
                    len(speeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
