"""Pretrained weights in and out: PyTorch / GluonCV / MXNet-example files <-> this project's checkpoints.

    python inference/convert.py --from torchvision:resnet50 resnet50.pth --model-prefix runs/r50/m
    python inference/convert.py --from akamaster:resnet20 resnet20.th --model-prefix runs/r20/m --check \\
        --torch-python .venv-torch/bin/python
    python inference/convert.py --from gluoncv:cifar_resnet20_v1 r20.params --model-prefix runs/g20/m --check
    python inference/convert.py --to torchvision:resnet50 out.pth --model-prefix runs/r50/m [--load-epoch N]

Import (``--from KIND:ARCH FILE``) writes an ordinary checkpoint, epoch 0:
``PREFIX-symbol.json``, ``PREFIX-inference-symbol.json``, ``PREFIX-0000.params`` and
``PREFIX-0000.json`` with the source's preprocessing (mean/std, input shape, class names), so
score.py, predict, the ONNX export and the inspector take it unchanged.  The four files are
one :class:`~mxcnn.common.FileSet`: replaced together or not at all (``--force`` to replace).
Export (``--to KIND:ARCH FILE``) writes a ``state_dict`` that ``torch.load(path,
weights_only=True)`` reads and the torchvision model of that name loads with
``strict=True`` (or a GluonCV ``.params`` for ``load_parameters``); it refuses a checkpoint
whose graph computes differently from that architecture, naming the first difference.

KIND:ARCH is one of :data:`weight_maps.SOURCES` (``torchvision:resnet50``, ``akamaster:resnet20``,
``gluoncv:cifar_resnet20_v1``, ``mxnet:resnet50``, ...); mapping rules are data in
:mod:`.weight_maps`.  ``--check`` runs the source framework's own forward on a batch
(PyTorch in ``--torch-python``'s interpreter, GluonCV and MXNet in this process) and compares
logits with ours; it exits 1 above ``--tolerance`` (relative to the largest source logit) or
when a top-1 class differs.  Bad input: one line and exit 2.
"""
import os
import re
import sys
import time

from mxcnn import common
from mxcnn.common import runtime

runtime.configure()  # before mxnet is imported

import argparse  # noqa: E402
import json  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402

from mxcnn.inference import checkpoint, torch_file, weight_maps  # noqa: E402
from mxcnn.inference import weight_transforms as transforms  # noqa: E402
from mxcnn.inference.name_rules import BiasIntoBN, RuleSet, Template  # noqa: E402
from mxcnn.inference.weight_graph import (  # noqa: E402
    bn_epsilons,
    build_symbol,
    check_image_shape,
    graph_difference,
    param_shapes,
)
from mxcnn.inference.weight_maps import Family  # noqa: E402

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["ConvertError", "import_weights", "export_weights", "read_source", "read_params",
           "map_to_ours", "map_to_source", "check_prefix", "write_checkpoint", "main"]

PROG = "convert.py"
EPOCH = 0


class ConvertError(common.UserError):
    """A weight file or checkpoint that cannot be converted exactly (message says why)."""


# ----------------------------------------------------------------------------- reading
def read_source(framework: str, path: str) -> "OrderedDict[str, np.ndarray]":
    """The named tensors of a source file: OrderedDict name -> numpy array."""
    if framework == "torch":
        return torch_file.read_state_dict(path)
    return read_params(path)


def read_params(path: str) -> "OrderedDict[str, np.ndarray]":
    """An MXNet / Gluon ``.params`` file (``arg:``/``aux:`` prefixes dropped)."""
    import mxnet as mx
    if not os.path.isfile(path):
        raise ConvertError("%s %s" % (path, "is a folder; give the .params file"
                                      if os.path.isdir(path) else "does not exist"))
    try:
        arrays = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ConvertError("%s is not a complete MXNet/Gluon .params file (%s)"
                           % (path, common.error_line(err, 200))) from None
    if not isinstance(arrays, dict):
        raise ConvertError("%s holds unnamed arrays; save the parameters by name" % path)
    return OrderedDict((key.partition(":")[2] if key[:4] in ("arg:", "aux:") else key, v.asnumpy())
                       for key, v in arrays.items())


def _rewrite(tensors, rewrites):
    if not rewrites:
        return tensors
    out = OrderedDict()
    for name, value in tensors.items():
        for pattern, repl in rewrites:
            name = re.sub(pattern, repl, name)
        out[name] = value
    return out


def _file_record(path):
    return dict(common.file_digest(path), file=os.path.abspath(path))


# ----------------------------------------------------------------------------- options
def source_options(family: Family, given: Mapping[str, str] | None = None) -> dict[str, bool]:
    """``{option: value}`` of the family's source options, ``given`` ({name: str}) over defaults."""
    chosen = {name: default for name, (default, _) in family.options.items()}
    for name, value in (given or {}).items():
        if name not in family.options:
            raise ConvertError("option %r does not apply here; options: %s"
                               % (name, ", ".join(sorted(family.options)) or "none"))
        text = str(value).lower()
        if text not in ("true", "false", "1", "0"):
            raise ConvertError("option %s takes true or false, got %r" % (name, value))
        chosen[name] = text in ("true", "1")
    return chosen


def source_preprocess(family: Family, chosen: Mapping[str, bool]) -> dict:
    """The preprocessing our checkpoint needs (mean/std 0-255, image shape) with the options'."""
    preprocess = dict(family.preprocess)
    for name, value in chosen.items():
        preprocess.update(family.options[name][1].get(value, {}))
    return preprocess


def read_classes(path: str, num_classes: int) -> list[str]:
    """Class names from a text file (one per line) or JSON (a list or a stats file's ``classes``)."""
    try:
        with open(path) as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConvertError("cannot read class names from %s (%s)" % (path, err)) from None
    try:
        data = json.loads(text)
        names = data.get("classes") if isinstance(data, dict) else data
    except ValueError:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list) or len(names) != num_classes:
        raise ConvertError("%s lists %s class names; the network has %d classes"
                           % (path, len(names) if isinstance(names, list) else "no", num_classes))
    return [str(n) for n in names]


# ----------------------------------------------------------------------------- mapping
def map_to_ours(family: Family, tensors: Mapping[str, np.ndarray], shapes: Mapping[str, tuple],
                what: str) -> dict[str, np.ndarray]:
    """Our-named float32 arrays for every entry of ``shapes``; ConvertError naming every
    mis-shaped, missing and extra tensor (with both shapes) otherwise."""
    rules = RuleSet(family.rules)
    ignore = [re.compile(p) for p in family.ignore]
    ours, biases, extra, misshaped, claimed = {}, [], [], [], {}
    for name, value in tensors.items():
        rule, target = rules.to_ours(name)
        if target is None or target not in shapes:
            if not any(p.search(name) for p in ignore):
                extra.append("%s %s" % (name, _shape(value.shape)))
            continue
        if isinstance(rule, BiasIntoBN):
            biases.append((name, target, value))
            continue
        if target in claimed:
            extra.append("%s (a second source for %s)" % (name, target))
        claimed[target] = name
        if tuple(value.shape) != shapes[target]:
            misshaped.append("%s %s where %s needs %s" % (name, _shape(value.shape), target,
                                                          _shape(shapes[target])))
        ours[target] = np.asarray(value, np.float32)
    for name, target, value in biases:
        if target in ours and tuple(value.shape) == ours[target].shape:
            ours[target] = ours[target] - np.asarray(value, np.float32)
        else:
            misshaped.append("%s %s cannot fold into %s" % (name, _shape(value.shape), target))
    missing = ["%s %s" % (n, _shape(s)) for n, s in shapes.items() if n not in ours]
    problems = [("mis-shaped", misshaped), ("missing", missing), ("extra", extra)]
    if any(items for _, items in problems):
        raise ConvertError("%s does not fit: %s" % (what, "; ".join(
            "%d %s: %s" % (len(items), label, common.short_list(items, 3))
            for label, items in problems if items)))
    return ours


def _shape(shape):
    return "x".join(str(int(v)) for v in shape) or "scalar"


def map_to_source(family: Family, arrays: Mapping[str, np.ndarray], names: Sequence[str],
                  image_channels: int) -> "OrderedDict[str, np.ndarray]":
    """Source-named arrays for our ``names`` (in that order), with the source's extras:
    zero biases folded away on import, pass-through input BatchNorms, torch's counters."""
    rules = RuleSet(family.rules)
    out, unmapped = OrderedDict(), []
    for name in names:
        source = rules.to_source(name)
        if source is None:
            unmapped.append(name)
        else:
            out[source] = arrays[name]
    if unmapped:
        raise AssertionError("the weight map has no source name for %s" % common.short_list(unmapped))
    for source, bn in rules.folded_biases():
        out[Template(source).format({})] = np.zeros_like(arrays[bn + "_gamma"])
    if family.input_bn:
        out.update(transforms.identity_bn(family.input_bn[0], image_channels, family.bn_eps))
    for first, second in family.fold_bn:
        channels = len(out[Template(second).format({"p": 0})])
        out.update(transforms.identity_bn(first, channels, family.bn_eps))
    return _with_counters(out) if family.framework == "torch" else out


def _with_counters(tensors):
    """torch's BatchNorm2d state: ``num_batches_tracked`` (int64 0) after each ``running_var``."""
    out = OrderedDict()
    for name, value in tensors.items():
        out[name] = value
        if name.endswith(".running_var"):
            out[name[:-len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return out


# ----------------------------------------------------------------------------- import
def import_weights(source: str, path: str, model_prefix: str,
                   image_shape: Sequence[int] | str | None = None,
                   classes: str | None = None, options: Mapping[str, str] | None = None,
                   force: bool = False) -> dict:
    """Convert ``path`` (a KIND:ARCH ``source`` file) into checkpoint ``model_prefix``, epoch 0.

    Returns a summary dict (``num_classes``, ``image_shape``, ``preprocess``, ``tensors``,
    ``ignored``, ``paths``).  ConvertError (a UserError) for anything that does not map."""
    kind, arch_name, arch = weight_maps.find_arch(source)
    if arch.refuse:
        raise ConvertError(arch.refuse)
    check_prefix(model_prefix, force)
    family = arch.family
    chosen = source_options(family, options)
    tensors = _rewrite(read_source(family.framework, path), family.rewrites)
    preprocess = source_preprocess(family, chosen)
    if family.input_bn:
        preprocess = transforms.fold_input_bn(tensors, family.input_bn[0], family.input_bn[1],
                                              family.bn_eps, preprocess)
    for first, second in family.fold_bn:
        transforms.fold_bn_pair(tensors, first, second, family.bn_eps)
    num_classes = _num_classes(family, tensors, "%s (%s)" % (path, source))
    shape = check_image_shape(image_shape or preprocess["image_shape"])
    symbol = _build(arch, num_classes, shape, source)
    arrays = map_to_ours(family, tensors, _shapes(symbol, shape, source), "%s as %s" % (path, source))
    if family.transform:
        transforms.TRANSFORMS[family.transform](arrays, arch.kwargs, to_ours=True)
    names = read_classes(classes, num_classes) if classes else (
        family.classes if family.classes and len(family.classes) == num_classes else None)
    stats = {"mean": preprocess["mean"], "std": preprocess["std"], "classes": names}
    from mxcnn.inference.predict import preprocess_record
    state = {"network": arch.network, "num_layers": arch.kwargs.get("num_layers"),
             "symbol_options": arch.kwargs, "preprocess": preprocess_record(shape, stats, num_classes),
             "imported_from": dict(_file_record(path), source=source, options=chosen)}
    paths = write_checkpoint(model_prefix, symbol, arrays, state, force)
    rules = RuleSet(family.rules)
    ignored = [n for n in tensors if rules.to_ours(n)[1] is None
               and not n.endswith("num_batches_tracked")]
    return {"source": source, "kind": kind, "arch": arch_name, "num_classes": num_classes,
            "image_shape": shape, "preprocess": preprocess, "options": chosen,
            "tensors": len(arrays), "ignored": ignored, "paths": paths}


def _num_classes(family, tensors, what):
    source = RuleSet(family.rules).to_source("fc1_weight")
    if source not in tensors or np.ndim(tensors[source]) != 2:
        raise ConvertError("%s has no classifier tensor %s; is it a %s file of this architecture?"
                           % (what, source, family.framework))
    return int(tensors[source].shape[0])


def _build(arch, num_classes, shape, what):
    try:
        return build_symbol(arch, num_classes, shape)
    except common.UserError as err:
        raise ConvertError("%s at --image-shape %s: %s" % (what, ",".join(map(str, shape)), err)) from None


def _shapes(symbol, shape, what):
    import mxnet as mx
    try:
        return param_shapes(symbol, shape)
    except mx.base.MXNetError as err:
        raise ConvertError("%s at --image-shape %s: %s" % (what, ",".join(map(str, shape)),
                                                           common.error_line(err, 200))) from None


def check_prefix(prefix: str, force: bool = False) -> tuple[str, str]:
    """``(folder, base name)`` of ``prefix`` if an import may write there; ConvertError when it
    holds a checkpoint (without ``force``) or epochs other than 0 (their symbol would go)."""
    folder, base = os.path.split(os.path.abspath(prefix))
    if not base or prefix.endswith(os.sep):
        raise ConvertError("--model-prefix %r names a folder; give a prefix like runs/r50/m" % prefix)
    epochs = checkpoint.saved_epochs(prefix)
    others = [e for e in epochs if e != EPOCH]
    if others or (epochs and not force) or (os.path.exists(prefix + "-symbol.json") and not force):
        raise ConvertError("%s already holds a checkpoint (epochs %s); %s" % (
            prefix, ", ".join(map(str, epochs)) or "none, but a symbol file",
            "choose another --model-prefix" if others else "pass --force to replace it"))
    return folder, base


def write_checkpoint(prefix: str, symbol: "mx.sym.Symbol", arrays: Mapping[str, np.ndarray], state: dict,
                     force: bool = False) -> dict[str, str]:
    """Checkpoint ``prefix`` epoch 0 as one FileSet; ConvertError when one exists (without
    ``force``) or when the prefix holds other epochs, which would lose their symbol."""
    import mxnet as mx
    folder, base = check_prefix(prefix, force)
    paths = checkpoint.checkpoint_paths(base, EPOCH)
    members = [paths[k] for k in ("symbol", "inference_symbol", "params", "state")]
    files = common.FileSet(folder, base, members)
    arg_names = set(symbol.list_arguments())
    arg = {n: mx.nd.array(v, dtype="float32") for n, v in arrays.items() if n in arg_names}
    aux = {n: mx.nd.array(v, dtype="float32") for n, v in arrays.items() if n not in arg_names}
    os.makedirs(folder, exist_ok=True)
    with files.lock():
        files.remove_stale()
        checkpoint.remove_files(prefix, [], [p for p in checkpoint.epoch_files(prefix, EPOCH)
                                             if os.path.basename(p) not in members])
        with files.replace() as new:
            checkpoint.save_checkpoint(os.path.join(new, base), EPOCH, symbol, arg, aux, state=state)
    return {k: os.path.join(folder, paths[k]) for k in ("symbol", "params", "state")}


# ----------------------------------------------------------------------------- export
def export_weights(model_prefix: str, target: str, path: str, epoch: int | None = None,
                   force: bool = False) -> dict:
    """Write checkpoint ``model_prefix`` (``epoch``, default the newest) as a ``target``
    (KIND:ARCH) file at ``path``; returns a summary dict."""
    kind, arch_name, arch = weight_maps.find_arch(target)
    family = arch.family
    if arch.refuse or family.framework == "mxnet":
        raise ConvertError(arch.refuse or "%s is an MXNet checkpoint format already: use the "
                           "checkpoint itself (PREFIX-symbol.json + PREFIX-NNNN.params)" % target)
    if os.path.exists(path) and not force:
        raise ConvertError("%s exists; pass --force to replace it" % path)
    epoch = _export_epoch(model_prefix, epoch)
    symbol, arg, aux = checkpoint.load_params(model_prefix, epoch)
    from mxcnn.inference.predict import checkpoint_preprocess
    record = checkpoint_preprocess(model_prefix, epoch) or {}
    if "fc1_weight" not in arg:
        raise ConvertError("checkpoint %s-%04d has no fc1 classifier; it is not a network of this "
                           "project's families" % (model_prefix, epoch))
    num_classes = int(arg["fc1_weight"].shape[0])
    shape = check_image_shape(record.get("image_shape") or family.preprocess["image_shape"])
    reference = _build(arch, num_classes, shape, target)
    difference = graph_difference(symbol, reference)
    if difference:
        raise ConvertError("checkpoint %s-%04d is not a %s as it computes: %s; the exported file "
                           "would give other outputs" % (model_prefix, epoch, target, difference))
    arrays = {n: v.asnumpy() for n, v in list(arg.items()) + list(aux.items())}
    for node, eps in bn_epsilons(symbol).items():
        if node + "_moving_var" in arrays:
            arrays[node + "_moving_var"] = transforms.adjust_eps(arrays[node + "_moving_var"], eps,
                                                                 family.bn_eps)
    if family.transform:
        transforms.TRANSFORMS[family.transform](arrays, arch.kwargs, to_ours=False)
    names = list(_shapes(reference, shape, target))
    tensors = map_to_source(family, arrays, names, shape[0])
    _write_source(family.framework, path, tensors)
    left_out = sorted(set(arrays) - set(names))
    return {"target": target, "kind": kind, "arch": arch_name, "epoch": epoch, "path": path,
            "num_classes": num_classes, "image_shape": shape, "tensors": len(tensors),
            "left_out": left_out, "preprocess": record}


def _export_epoch(prefix, epoch):
    if epoch is not None:
        return int(epoch)
    latest = checkpoint.latest_epoch(prefix)
    if latest is None:
        raise ConvertError("no complete checkpoint under --model-prefix %s" % prefix)
    return latest


def _write_source(framework, path, tensors):
    if framework == "torch":
        torch_file.write_state_dict(path, tensors)
        return
    import mxnet as mx
    arrays = {name: mx.nd.array(value, dtype=value.dtype) for name, value in tensors.items()}
    common.atomic_write(path, lambda tmp: mx.nd.save(tmp, arrays))


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Import PyTorch/GluonCV/MXNet weights as a checkpoint, or export a "
                               "checkpoint as a torchvision state_dict / GluonCV .params.")
    way = parser.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", dest="source", nargs=2, metavar=("KIND:ARCH", "FILE"),
                     help="import FILE, e.g. --from torchvision:resnet50 resnet50.pth")
    way.add_argument("--to", dest="target", nargs=2, metavar=("KIND:ARCH", "FILE"),
                     help="export to FILE, e.g. --to torchvision:resnet50 out.pth")
    way.add_argument("--list", action="store_true", help="list every KIND:ARCH and exit")
    parser.add_argument("--model-prefix", help="checkpoint prefix (written by --from, read by --to)")
    parser.add_argument("--load-epoch", type=int, help="--to: checkpoint epoch (default: newest)")
    parser.add_argument("--image-shape", help="--from: C,H,W the checkpoint is for (default: the source's)")
    parser.add_argument("--classes", help="--from: class names, one per line (or a JSON list)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="--from: a source option, e.g. transform_input=false (torchvision "
                             "googlenet / inception_v3)")
    parser.add_argument("--force", action="store_true", help="replace an existing checkpoint or file")
    parser.add_argument("--check", action="store_true",
                        help="compare logits with the source framework's own forward on a batch")
    parser.add_argument("--torch-python", help="--check: a Python with torch and torchvision")
    parser.add_argument("--check-batch", type=int, default=64, help="--check: images (default 64)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="--check: largest logit difference relative to the largest logit")
    return parser


def _parse_options(pairs):
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConvertError("--option takes KEY=VALUE, got %r" % pair)
        options[key.strip()] = value.strip()
    return options


def _run(args):
    from mxcnn.inference import weight_check
    if args.list:
        for kind in sorted(weight_maps.SOURCES):
            print("%s: %s" % (kind, ", ".join(sorted(weight_maps.SOURCES[kind]))))
        return 0
    if not args.model_prefix:
        raise ConvertError("--model-prefix is required")
    if args.check_batch < 1:
        raise ConvertError("--check-batch must be at least 1")
    start = time.time()
    if args.source:
        summary = import_weights(args.source[0], args.source[1], args.model_prefix,
                                 args.image_shape, args.classes, _parse_options(args.option),
                                 args.force)
        print(weight_check.describe_import(summary, time.time() - start))
        result = weight_check.check_import(summary, args.source[1], args.model_prefix,
                                           args) if args.check else None
    else:
        summary = export_weights(args.model_prefix, args.target[0], args.target[1],
                                 args.load_epoch, args.force)
        print(weight_check.describe_export(summary, time.time() - start))
        result = weight_check.check_export(summary, args.model_prefix, args) if args.check else None
    if result is not None:
        print(weight_check.describe_check(result))
        return 0 if result["ok"] else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except common.UserError as err:  # bad input; anything else is a bug and keeps its traceback
        return common.cli_error(PROG, err)


if __name__ == "__main__":
    sys.exit(main())
