"""What a training run is, checked before anything is read or bound: ``prepare(args) -> Job``.

Every problem the user can fix (flags, data files, devices, a checkpoint that does not fit)
raises ``options.UsageError`` (a ``common.UserError``) here, as one line, so that
``train_cifar.main`` can print it and exit 2 before MXNet binds anything.
"""
import json
import math
import os

from mxcnn.common import files
from mxcnn.data import recfile
from mxcnn.inference import checkpoint as ckpt
from mxcnn.train import run_prefix
from mxcnn.train.options import DATASETS, KVSTORES, UsageError, network_options

__all__ = ["Job", "prepare", "load_checkpoint", "use_rank_copy", "resolve_data",
           "default_prefix", "count_examples"]

RECORDIO_MAGIC = b"\x0a\x23\xd7\xce"  # 0xced7230a, little endian


class Job:
    """The checked run: args, contexts, engine, symbol, data files and the resume point."""

    def __init__(self, args):
        self.args = args
        self.stats = None
        self.train_rec = self.val_rec = None
        self.begin_epoch, self.state = 0, {}
        self.arg_params = self.aux_params = self.states_file = None
        self.states_note = None  # why the optimizer state is not restored, when it is not
        self.resume_prefix = None  # the checkpoint copy resumed from (PREFIX or PREFIX-rank)
        self.ema_resume = None  # (ema state, (arg, aux) average) of an EMA checkpoint
        self.lookahead_resume = None  # (lookahead state, (arg, aux) slow weights)
        self.discard_epochs, self.discard_files = [], []  # run_prefix.clear_prefix removes them
        self.prefix_lock, self.made_dirs = None, []  # run_prefix.lock_prefix: one run per prefix
        self.memory = None  # _check_memory: (bytes a step needs, about; bytes free or None; hint)
        self.dtype_note = None  # what --dtype auto chose and why


def prepare(args):
    """Validate everything that can be checked before training; return the ``Job`` to run."""
    job = Job(args)
    _check_numbers(args)
    from mxcnn import symbols  # loads MXNet: after runtime.configure()
    symbols.family_module(args.network)  # unknown network: fail before anything else
    job.image_shape = symbols.layers.as_image_shape(args.image_shape)
    options = network_options(args)
    _check_devices(job)
    if not args.benchmark:
        job.train_rec, job.val_rec, job.stats = resolve_data(args)
    _check_classes(job)
    job.symbol = symbols.get_symbol(args.network, num_classes=args.num_classes,
                                    num_layers=args.num_layers, image_shape=job.image_shape, **options)
    _check_memory(job)
    job.prefix = args.model_prefix or default_prefix(args)
    if not args.benchmark:
        run_prefix.check_writable(job.prefix, "--model-prefix")
    if args.log_file:
        run_prefix.check_writable(args.log_file, "--log-file")
    if not args.benchmark and not args.kv_store.startswith("dist"):  # dist: rank 0, in run()
        run_prefix.lock_prefix(job)  # held for the run: before the checkpoints are read
    try:
        _load_resume_point(job)
        run_prefix.check_ownership(job)
    except BaseException:
        run_prefix.unlock(job, refused=True)
        raise
    return job


def _check_numbers(args):
    if args.data_nthreads is not None and args.data_nthreads < 1:
        raise UsageError("--data-nthreads must be at least 1, got %d" % args.data_nthreads)
    if args.batch_size < 1:
        raise UsageError("--batch-size must be positive, got %d" % args.batch_size)
    if args.num_epochs < 1:
        raise UsageError("--num-epochs must be positive, got %d" % args.num_epochs)
    if args.load_epoch is not None and args.resume:
        raise UsageError("give --load-epoch N or --resume, not both")
    if args.load_epoch is not None and args.load_epoch < 0:
        raise UsageError("--load-epoch must be >= 0 (the number of completed epochs)")
    try:
        args.step_epochs = [float(e) for e in str(args.lr_step_epochs or "").split(",") if e.strip()]
    except ValueError:
        raise UsageError("--lr-step-epochs %r is not a comma-separated list of epochs, e.g. 82,123"
                         % args.lr_step_epochs)
    if not all(math.isfinite(e) and e >= 0 for e in args.step_epochs):
        raise UsageError("--lr-step-epochs %r: epochs must be finite and >= 0, e.g. 82,123"
                         % args.lr_step_epochs)
    _check_ranges(args)
    _check_fast_flags(args)


#: (flag, test, what the value must be) of the numeric flags; NaN fails every test.
_RANGES = (
    ("--lr", lambda v: v > 0, "a positive learning rate, e.g. 0.1"),
    ("--wd", lambda v: v >= 0, ">= 0, e.g. 1e-4"),
    ("--mom", lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.9"),
    ("--lr-factor", lambda v: 0 < v <= 1, "in (0, 1], e.g. 0.1"),
    ("--final-lr", lambda v: v >= 0, ">= 0"),
    ("--warmup-epochs", lambda v: v >= 0, ">= 0 (0: no warm-up)"),
    ("--warmup-iters", lambda v: v >= 0, ">= 0 (0: no warm-up)"),
    ("--warmup-lr", lambda v: v >= 0, ">= 0"),
    ("--label-smoothing", lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.1"),
    ("--mixup-alpha", lambda v: v >= 0, ">= 0 (0: no mixup), e.g. 0.2"),
    ("--save-period", lambda v: v >= 1, ">= 1 epoch"),
    ("--disp-batches", lambda v: v >= 0, ">= 0 (0: no speed lines)"),
    ("--num-batches", lambda v: v >= 1, ">= 1"),
    ("--num-examples", lambda v: v >= 1, ">= 1"),
    ("--seed", lambda v: 0 <= v < 2 ** 32, "in [0, 2^32)"),
    ("--memonger", lambda v: v in (0, 1), "0 or 1"),
    ("--benchmark", lambda v: v in (0, 1), "0 or 1"),
    ("--deterministic", lambda v: v in (0, 1), "0 or 1"),
)


def _check_ranges(args):
    """Every numeric flag in its range (``_RANGES``): ``--lr nan`` or ``--lr -1`` stop here, not
    deep inside MXNet or as gradient ascent."""
    for flag, test, what in _RANGES:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if not (math.isfinite(value) and test(value)):
            raise UsageError("%s must be %s, got %r" % (flag, what, value))


def _check_fast_flags(args):
    """--ema-*, --lookahead-*, --tta, --crop-pad and --bn-bias-lr-mult (the fast recipe's)."""
    from mxcnn.inference import tta
    from mxcnn.train import ema, lookahead
    problem = ema.check_decay(args.ema_decay, args.ema_every) if args.ema_decay else None
    problem = problem or lookahead.check(args.lookahead_every, args.lookahead_decay)
    if problem:
        raise UsageError(problem)
    if args.lookahead_every and args.kv_store == "dist_async":
        raise UsageError("--lookahead-every needs the weights on the workers; dist_async keeps "
                         "them on the servers: use --kv-store dist_sync")
    args.tta_views = tta.parse(args.tta)
    if args.crop_pad < 0:
        raise UsageError("--crop-pad must be >= 0 pixels, got %d" % args.crop_pad)
    if not args.bn_bias_lr_mult > 0:
        raise UsageError("--bn-bias-lr-mult must be positive, got %r" % (args.bn_bias_lr_mult,))


def _check_devices(job):
    """Contexts, kvstore and engine: ``job.contexts`` and ``job.engine``."""
    from mxcnn.common import devices
    from mxcnn.graph import precision
    from mxcnn.train import engines
    args = job.args
    if args.kv_store not in KVSTORES:
        raise UsageError("--kv-store %r is not one of: %s" % (args.kv_store, ", ".join(KVSTORES)))
    if args.kv_store.startswith("dist") and "DMLC_PS_ROOT_URI" not in os.environ:
        raise UsageError("--kv-store %s needs the DMLC_* environment of a launcher: run python "
                         "distributed/launch.py -n WORKERS -s SERVERS -- python train/train_cifar.py ..."
                         % args.kv_store)
    job.contexts = devices.check_gpus(devices.parse_devices(args.gpus, args.cpus))
    requested = args.dtype
    args.dtype, why = precision.resolve_dtype(args.dtype, job.contexts)
    job.dtype_note = why and "--dtype %s: %s (%s)" % (requested, args.dtype, why)
    precision.check_supported(args.dtype, job.contexts)
    if args.batch_size % len(job.contexts):
        raise UsageError("--batch-size %d is not divisible by the %d devices; use a multiple of %d"
                         % (args.batch_size, len(job.contexts), len(job.contexts)))
    job.engine = args.engine or engines.DEFAULT_ENGINE
    if args.memonger and job.engine != "module":
        raise UsageError("--memonger needs --engine module: MXNet 1.9.1's CachedOp (gluon) builds its "
                         "backward graph without a mirror function, so __force_mirroring__ is ignored")


def _check_classes(job):
    """``args.num_classes`` from the flag, the data's stats or the dataset, and the channels."""
    args = job.args
    data_classes = job.stats.get("num_classes") if job.stats else None
    if args.num_classes is None:
        args.num_classes = int(data_classes or DATASETS[args.dataset])
    elif data_classes is not None and int(data_classes) != args.num_classes:
        raise UsageError("--num-classes %d disagrees with the data: %s lists %d classes; drop "
                         "--num-classes or use the matching data"
                         % (args.num_classes, job.stats["path"], data_classes))
    if job.stats and job.stats.get("image_shape") and \
            tuple(job.stats["image_shape"])[0] != job.image_shape[0]:
        raise UsageError("--image-shape %s has %d channels but the data has %d"
                         % (args.image_shape, job.image_shape[0], job.stats["image_shape"][0]))


def _load_resume_point(job):
    """``--load-epoch N`` / ``--resume``: the checkpoint's params, state and optimizer file."""
    args = job.args
    # a dist worker on a host without rank 0's files resumes from the copy this host has
    source = job.resume_prefix = ckpt.resume_prefix(job.prefix, args.kv_store.startswith("dist"))
    load_epoch = args.load_epoch
    if args.resume:
        load_epoch = ckpt.latest_epoch(source)
        if load_epoch is None:
            raise UsageError("--resume: no complete checkpoint under --model-prefix %s (expected %s)"
                             % (job.prefix, ckpt.checkpoint_paths(job.prefix, 1)["params"]))
    if load_epoch is None:
        return
    if load_epoch:
        ckpt.require_epoch(source, load_epoch)  # "does not exist; saved epochs: ..."
    if load_epoch >= args.num_epochs:
        raise UsageError("checkpoint %d already has --num-epochs %d epochs; raise --num-epochs"
                         % (load_epoch, args.num_epochs))
    if load_epoch == 0:
        return
    load_checkpoint(job, source, load_epoch)
    job.begin_epoch = load_epoch


def load_checkpoint(job, prefix, epoch):
    """Params, training state, EMA/lookahead weights and optimizer-state file of checkpoint
    ``epoch`` under ``prefix`` into ``job`` (``job.resume_prefix`` says which copy)."""
    job.resume_prefix = prefix
    _, job.arg_params, job.aux_params = ckpt.load_params(prefix, epoch)
    _check_fits(job, epoch)
    job.state = ckpt.load_state(prefix, epoch)
    from mxcnn.train import ema
    paths = ckpt.checkpoint_paths(prefix, epoch)
    if job.state.get("ema"):  # .params holds the average; training continues from the live weights
        job.ema_resume = (job.state["ema"], (job.arg_params, job.aux_params))
        job.arg_params, job.aux_params = ema.load_weights(paths["live"])
    if job.state.get("lookahead"):  # the slow weights the pulls continue from
        slow = ema.load_weights(paths["slow"],
                                holds="the lookahead's slow weights, which --lookahead-every needs")
        job.lookahead_resume = (job.state["lookahead"], slow)
    job.states_file, job.states_note = _states_to_restore(job, paths["states"])


def use_rank_copy(job, rank):
    """Worker ``rank`` > 0 of a dist job continues from its own copy ``PREFIX-rank`` when
    this host has it at the epoch being resumed (so it keeps its own BatchNorm statistics).
    True when it switched to that copy."""
    own = ckpt.rank_prefix(job.prefix, rank)
    if not job.begin_epoch or own == job.resume_prefix or \
            not os.path.exists(ckpt.checkpoint_paths(own, job.begin_epoch)["state"]):
        return False
    load_checkpoint(job, own, job.begin_epoch)
    return True


def _states_to_restore(job, states):
    """``(states file or None, why not)``.  The project's own .states (train/opt_states.py)
    load onto any devices and either engine; MXNet's pickled ones only onto the same."""
    if not os.path.exists(states):
        kv = job.state.get("kvstore", "")
        why = ("the optimizer ran on the servers of --kv-store %s, which a worker cannot save"
               % kv) if kv.startswith("dist") and "async" in kv else "no .states file was saved"
        return None, why
    from mxcnn.train import opt_states
    if opt_states.is_own_format(states):
        return states, None
    if job.state.get("engine", job.engine) == job.engine and \
            job.state.get("num_devices", len(job.contexts)) == len(job.contexts):
        return states, None
    return None, "%s is MXNet's own format, saved by another engine or device count" % states


def _check_fits(job, epoch):
    """The checkpoint's parameters are the names and shapes this network needs."""
    from mxcnn.train import engines
    source = ckpt.checkpoint_paths(job.resume_prefix or job.prefix, epoch)["params"]
    wanted = set(job.symbol.list_arguments()) - {"data"} - set(engines.label_names(job.symbol))
    missing = sorted(wanted - set(job.arg_params))
    if missing:
        raise UsageError("checkpoint %s does not fit this network (no %s); check --network/"
                         "--num-layers/--model-prefix" % (source, ", ".join(missing[:3])))
    shapes = engines.input_shapes(job.symbol, (1,) + job.image_shape, (1,))
    arg_shapes, _, aux_shapes = job.symbol.infer_shape(**shapes)
    expected = dict(zip(job.symbol.list_arguments(), arg_shapes))
    expected.update(zip(job.symbol.list_auxiliary_states(), aux_shapes))
    for name, value in list(job.arg_params.items()) + list(job.aux_params.items()):
        if name in expected and tuple(value.shape) != tuple(expected[name]):
            raise UsageError("checkpoint %s does not fit this network: %s is %s, the network needs "
                             "%s; check --network/--num-layers and the network options"
                             % (source, name, tuple(value.shape), tuple(expected[name])))


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
    if args.data_val is not None and args.data_val.strip().lower() in ("", "none"):
        val_rec = None  # --data-val none: train without validation
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
        if not isinstance(stats, dict):
            raise UsageError("%s is not a stats file (a JSON %s, not an object); convert the data "
                             "again" % (stats_file, type(stats).__name__))
        stats["path"] = stats_file
    _check_counts(train_rec, val_rec, stats)
    return train_rec, val_rec, stats


def _check_counts(train_rec, val_rec, stats):
    """The .rec files, their .idx and the stats agree on what the data is: record counts (from
    the .rec headers), index entries, ``num_train``/``num_val``, file sizes and digests
    (``recfile.check_split``).  The epoch length, and with it the learning-rate schedule,
    comes from these counts, so a cut or mixed set stops here in one line."""
    described = dict(stats, _source=stats["path"]) if stats else None
    for rec, key in ((train_rec, "num_train"), (val_rec, "num_val")):
        if rec:
            own = described if stats and _stats_path(rec) == stats["path"] else None
            recfile.check_split(rec, own, key)


def default_prefix(args):
    depth = "" if args.num_layers is None else str(args.num_layers)
    return os.path.join("runs", "%s-%s%s" % (args.dataset, args.network, depth), "model")


def count_examples(job):
    """Training images: --num-examples, else the records of the .rec (counted from its headers,
    checked against its .idx and the stats by ``resolve_data``).

    --num-examples above the records there are is refused: the epoch would be counted longer
    than the data, so in a dist job a worker would wait for batches its peers never push
    (MXNet issue #7888, the last-batch deadlock).  A smaller number is allowed; it only
    shortens the epoch length the schedule counts with.
    """
    args = job.args
    real = recfile.count_records(job.train_rec)
    if args.num_examples and args.num_examples > real:
        raise UsageError("--num-examples %d is more than the %d records in %s; drop it (the "
                         "count is read from the data) or give at most %d"
                         % (args.num_examples, real, job.train_rec, real))
    return args.num_examples or real


def _check_memory(job):
    """Refuse a --batch-size whose activations cannot fit in memory before MXNet allocates
    anything; keep ``job.memory`` = (bytes a step needs, about; bytes available or None; the
    --memonger hint) for the message of an allocation failure later (``memory_message``).

    Measured on MXNet 1.9.1 CPU binds (ResNet-8/20, PreAct-164, WRN-16, DenseNet-40,
    MobileNet, airbench): a training executor allocates 0.5-1.2x the sum of the network's
    float32 outputs per image times the batch.  A run is refused only when an eighth of that
    sum (with --memonger: the largest output and its gradient) does not fit, so an estimate
    that is off by 4x never refuses a batch that would train."""
    args = job.args
    total, largest = _activation_bytes(job.symbol, job.image_shape)
    scale = 0.5 if args.dtype not in (None, "float32") else 1.0
    gpus = [c for c in job.contexts if c.device_type == "gpu"]
    batch = args.batch_size // len(job.contexts) if gpus else args.batch_size
    needed = batch * scale * 0.6 * total
    floor = batch * scale * (2 * largest if args.memonger else total / 8)
    available = _gpu_free(gpus) if gpus else _host_available()
    mirrored = batch * scale * 2 * largest  # what --memonger cannot go below
    hint = "" if args.memonger or available is None or mirrored > available else ", or --memonger 1"
    job.memory = (needed, available, hint)
    if available is not None and floor > available:
        raise UsageError(memory_message(job, refused=True))


def memory_message(job: Job, refused: bool = False) -> str:
    """"--batch-size N needs about X for the activations of <network> ..." (one line)."""
    args = job.args
    needed, available, hint = job.memory or (None, None, "")
    what = "about %s" % files.size_text(needed) if needed else "more memory than this machine has"
    where = "%s of memory available" % files.size_text(available) if available else "too little memory"
    fit = ""
    if needed and available:
        fit = ", at most about %d" % max(1, int(args.batch_size * available / needed))
    network = args.network + ("-%s" % args.num_layers if args.num_layers else "")
    return ("--batch-size %d %s: it needs %s for the activations of %s at %s, with %s; use a "
            "smaller --batch-size%s%s" % (args.batch_size, "is too large" if refused else
                                          "failed to allocate", what, network,
                                          "x".join(map(str, job.image_shape)), where, fit, hint))


def _activation_bytes(symbol, image_shape):
    """(sum, largest) of the float32 bytes of the network's outputs for one image."""
    import mxnet as mx

    from mxcnn.train import engines
    internals = symbol.get_internals()
    try:
        _, out_shapes, _ = internals.infer_shape(**engines.input_shapes(symbol, (1,) + image_shape,
                                                                        (1,)))
    except mx.base.MXNetError:  # shapes the network cannot take were refused before this
        return 0, 0
    inputs = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    sizes = [math.prod(shape) * 4 for name, shape in zip(internals.list_outputs(), out_shapes or [])
             if name not in inputs and shape]
    return sum(sizes), max(sizes, default=0)


def _host_available():
    """Bytes this process can still allocate: MemAvailable + SwapFree, or less under a cgroup
    memory limit; None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle}
        available = info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            text = limit.read().strip()
            if text != "max":
                available = min(available, int(text) - int(used.read()))
    except (OSError, ValueError):
        pass
    return available


def _gpu_free(gpus):
    """The smallest free memory of the GPUs ``gpus``, or None when MXNet cannot tell."""
    import mxnet as mx
    try:
        return min(mx.context.gpu_memory_info(c.device_id)[0] for c in gpus)
    except Exception:  # no CUDA build, or a driver that does not answer
        return None
