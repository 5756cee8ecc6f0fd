"""The command line of ``train_cifar.py``: flags as MXNet's ``example/image-classification``
(``common/fit.py``, ``train_cifar10.py``), presets, and the network options they give.

A new flag goes into the group function it belongs to (``_network_flags`` ...
``_checkpoint_flags``); a family option with a flag of its own into ``NET_OPTION_FLAGS``.
"""
import argparse
import ast

from mxcnn import common
from mxcnn.train.presets import PRESETS
from mxcnn.train.presets import describe as describe_presets

__all__ = ["PROG", "DATASETS", "KVSTORES", "NET_OPTION_FLAGS", "UsageError", "build_parser",
           "explicit_flags", "apply_preset", "network_options"]

PROG = "train_cifar.py"
DATASETS = {"cifar10": 10, "cifar100": 100}
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
               "\nwith epoch N+1; the log numbers epochs from 0 (Epoch[N] is the (N+1)-th epoch)."
               "\nA run owns its prefix: a new run where another one is refuses (--resume, another"
               "\n--model-prefix or --overwrite). The .json, written last, records the other files'"
               "\nsizes and SHA-256: an epoch without it was cut short and is not resumed from."
               "\nA NaN/Inf loss or parameter stops training (exit 1) before anything is saved.")
    for title, add_flags in (("network", _network_flags), ("data", _data_flags),
                             ("devices", _device_flags), ("optimization", _optimization_flags),
                             ("fine-tuning", _finetune_flags),
                             ("checkpoints and logs", _checkpoint_flags)):
        add_flags(parser.add_argument_group(title), default)
    return parser


def _network_flags(g, default):
    """The network flags."""
    g.add_argument("--network", default=default("resnet"), help="registered network (default resnet)")
    g.add_argument("--num-layers", type=int, default=default(None), help="depth, e.g. 20/56/110/164")
    g.add_argument("--num-classes", type=int, default=default(None),
                   help="classes (default: from the data's _stats.json, else 10/100 by --dataset)")
    g.add_argument("--image-shape", default=default("3,32,32"), help="C,H,W (default 3,32,32)")
    g.add_argument("--dropout", type=float, default=default(None),
                   help="dropout rate (if the family has one)")
    for flag, kind, text in NET_OPTION_FLAGS:
        g.add_argument(flag, type=kind, default=default(None), help=text)
    g.add_argument("--net-option", action="append", default=default([]), metavar="KEY=VALUE",
                   help="any other option of the family's get_symbol (repeatable)")
    g.add_argument("--deep-supervision", default=default(None), metavar="NAME:WEIGHT,...",
                   help="auxiliary heads at internal outputs (symbols.deep_supervision)")
    g.add_argument("--memonger", type=int, default=default(0),
                   help="1: plan memory mirroring (graph.memonger); uses the module engine")


def _data_flags(g, default):
    """The data flags."""
    g.add_argument("--dataset", choices=sorted(DATASETS), default=default("cifar10"))
    g.add_argument("--data-dir", default=default(None),
                   help="folder with <dataset>_train.rec/_val.rec/_stats.json "
                        "(default ~/.mxnet/datasets/<dataset>)")
    g.add_argument("--data-train", default=default(None), help="training .rec (default from --data-dir)")
    g.add_argument("--data-val", default=default(None),
                   help="validation .rec (default from --data-dir); 'none': train without validation")
    g.add_argument("--num-examples", type=int, default=default(None),
                   help="training images (default: counted from the data; at most that many)")
    g.add_argument("--data-nthreads", type=int, default=default(None),
                   help="decoding threads: ImageRecordIter's preprocess_threads for data too big "
                        "for memory (MXNet's default 4, capped at cores/2-1), else the one-off "
                        "decode (default: the usable cores)")
    g.add_argument("--benchmark", type=int, default=default(0),
                   help="1: synthetic data, report speed only (no data files, no checkpoints)")
    g.add_argument("--num-batches", type=int, default=default(50), help="batches per --benchmark epoch")
    g.add_argument("--crop-pad", type=int, default=default(4),
                   help="training augmentation: padding before the random crop (default 4)")
    g.add_argument("--crop-pad-mode", choices=("zero", "reflect"), default=default("zero"),
                   help="fill the crop padding with zeros or the reflected image (airbench)")
    g.add_argument("--flip", choices=("random", "alternate"), default=default("random"),
                   help="training flips: random each epoch, or airbench's alternating flip "
                        "(each image mirrored every other epoch)")
    g.add_argument("--tta", default=default("none"), metavar="VIEWS",
                   help="test-time augmentation at validation: none, flip, translate or "
                        "flip,translate (mean probability over the views; inference/tta.py)")
    g.add_argument("--augment", choices=("auto", "cifar", "imagenet"), default=default("auto"),
                   help="cifar: pad + crop + flip; imagenet: random-resized crop (scale "
                        "0.08-1, aspect 3/4-4/3) + flip, evaluation on the centre crop of the "
                        "image resized to size/0.875 (ImageRecordIter); auto (default): "
                        "imagenet for ImageNet layouts or images not of --image-shape's size")
    g.add_argument("--color-jitter", type=float, default=default(0.0), metavar="F",
                   help="--augment imagenet: random brightness, contrast and saturation "
                        "factors in [1-F, 1+F] (torchvision's 0.4; default 0: off)")


def _device_flags(g, default):
    """The devices flags."""
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
    g.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "auto"), default=default("float32"),
                   help="compute precision, float32 master weights and checkpoints either way "
                        "(graph.precision): float16 on GPUs, bfloat16 on CPUs with avx512_bf16; "
                        "auto: bfloat16 where it trains faster than float32 (AMD Zen 4/5), else "
                        "float32 (the fast preset's default)")


def _optimization_flags(g, default):
    """The optimization flags."""
    g.add_argument("--preset", choices=sorted(PRESETS), default=default(None))
    g.add_argument("--batch-size", type=int, default=default(128), help="per worker, split over devices")
    g.add_argument("--num-epochs", type=int, default=default(164))
    g.add_argument("--optimizer", default=default("sgd"), help="sgd, nag, adam, ... (mx.optimizer)")
    g.add_argument("--lr", type=float, default=default(0.1))
    g.add_argument("--lr-scheduler", choices=("step", "cosine", "linear"), default=default("step"),
                   help="step, cosine, or linear decay to --final-lr after the warm-up")
    g.add_argument("--final-lr", type=float, default=default(0.0),
                   help="learning rate at the end of a cosine/linear schedule")
    g.add_argument("--lr-factor", type=float, default=default(0.1))
    g.add_argument("--lr-step-epochs", default=default("82,123"), help="epochs after which lr *= factor")
    g.add_argument("--warmup-epochs", type=float, default=default(0.0))
    g.add_argument("--warmup-iters", type=int, default=default(0),
                   help="warm-up updates (if no --warmup-epochs)")
    g.add_argument("--warmup-lr", type=float, default=default(0.0))
    g.add_argument("--warmup-mode", choices=("linear", "constant"), default=default("linear"))
    g.add_argument("--mom", type=float, default=default(0.9))
    g.add_argument("--wd", type=float, default=default(1e-4))
    g.add_argument("--label-smoothing", type=float, default=default(0.0))
    g.add_argument("--mixup-alpha", type=float, default=default(0.0))
    g.add_argument("--ema-decay", type=float, default=default(0.0),
                   help="weight EMA decay, e.g. 0.99: validate and save the averaged weights "
                        "(train/ema.py; 0 = off)")
    g.add_argument("--ema-every", type=int, default=default(1), help="EMA update every N steps")
    g.add_argument("--lookahead-every", type=int, default=default(0),
                   help="lookahead every N steps (airbench: 5): slow weights pulled towards the "
                        "live ones, then copied back (train/lookahead.py; 0 = off)")
    g.add_argument("--lookahead-decay", type=float, default=default(0.95 ** 5),
                   help="the lookahead's decay at the end of the run; it grows as (step/total)^3")
    g.add_argument("--bn-bias-lr-mult", type=float, default=default(1.0),
                   help="lr x M and wd x 1/M for the BatchNorm biases (betas); Page 2018 uses 64")
    g.add_argument("--seed", type=int, default=default(0))
    g.add_argument("--deterministic", type=int, default=default(0),
                   help="1: MXNET_ENFORCE_DETERMINISM=1 (exact resume; seeds are always fixed)")


def _finetune_flags(g, default):
    """The fine-tuning flags (train/finetune.py)."""
    g.add_argument("--pretrained", default=default(None), metavar="PREFIX[:EPOCH]",
                   help="start from this checkpoint (default epoch: its newest): every tensor "
                        "whose name and shape match is loaded, the classifier is new when the "
                        "classes differ")
    g.add_argument("--freeze", default=default(None), metavar="SPEC",
                   help="fix parameters: a stage (stage2: everything up to its end), "
                        "'backbone' (all but the classifier) or patterns ('stage1_*,stem_*'); "
                        "their BatchNorms keep their statistics")
    g.add_argument("--backbone-lr-mult", type=float, default=default(None), metavar="M",
                   help="learning rate x M for every trained parameter but the classifier")


def _checkpoint_flags(g, default):
    """The checkpoints and logs flags."""
    g.add_argument("--model-prefix", default=default(None),
                   help="checkpoint/log prefix (default runs/<dataset>-<network><layers>/model)")
    g.add_argument("--save-period", type=int, default=default(1), help="checkpoint every N epochs")
    g.add_argument("--load-epoch", type=int, default=default(None),
                   help="load PREFIX-NNNN.params (N completed epochs) and continue with epoch N+1")
    g.add_argument("--resume", action="store_true", default=default(False),
                   help="continue from the newest complete checkpoint of --model-prefix")
    g.add_argument("--overwrite", action="store_true", default=default(False),
                   help="replace the run under --model-prefix: its checkpoints, log and curves "
                        "are deleted just before training (with --load-epoch N: the checkpoints "
                        "after N); without it a new run there refuses to start")
    g.add_argument("--disp-batches", type=int, default=default(20), help="speed line every N batches")
    g.add_argument("--log-file", default=default(None), help="also write the log here")
    g.add_argument("--no-plot", action="store_true", default=default(False), help="skip the curves PNG")


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
