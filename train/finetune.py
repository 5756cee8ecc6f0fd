"""Fine-tuning from a checkpoint: ``--pretrained``, ``--freeze``, ``--backbone-lr-mult``.

    python train/train_cifar.py ... --pretrained runs/animals/model:30 --freeze stage1 \\
        --backbone-lr-mult 0.1

* ``--pretrained PREFIX[:EPOCH]`` (default epoch: the newest complete one) takes any checkpoint
  of this project, an imported one included.  Every parameter and BatchNorm statistic whose
  name and shape match is loaded; the rest keeps the initializer's values, and the log names
  what was skipped.  The classifier (the layer feeding each ``SoftmaxOutput``) starts afresh
  when its shape differs (another ``--num-classes``) or the checkpoint names other classes.
  A checkpoint none of whose tensors fits the network is refused (one line, exit 2).
* ``--freeze`` fixes parameters: ``stage2`` (every parameter up to the end of ``stage2_*``,
  the stem included; ``block2``, ``conv3`` ... for families named so), ``backbone`` (all but
  the classifier) or glob patterns (``'stage1_*,*_bn_*'``).  Module gets them as
  ``fixed_param_names``, Gluon as ``grad_req='null'``.  A BatchNorm whose scale and shift are
  both frozen runs in inference mode (``use_global_stats``): its moving statistics stay those
  of the checkpoint.
* ``--backbone-lr-mult M`` scales the learning rate of every trained parameter but the
  classifier by M (weight decay as set).

The choices are recorded in each checkpoint's ``.json`` (``finetune``); ``--resume`` continues
from the run's own checkpoint and must be given the same ``--freeze`` and
``--backbone-lr-mult``.
"""

import fnmatch
import json
import re

from mxcnn.inference import checkpoint as ckpt
from mxcnn.train.options import UsageError

__all__ = [
    "FineTune",
    "parse_pretrained",
    "classifier_params",
    "frozen_params",
    "frozen_symbol",
    "prepare",
    "configure",
]

_GLOB = re.compile(r"[*?\[]")
_UNIT = re.compile(r"^([A-Za-z]+\d+)_")
#: single-input operators between a classifier and its SoftmaxOutput
_PASS_THROUGH = ("Flatten", "Reshape", "Dropout", "Activation", "Cast", "amp_cast", "identity")


class FineTune:
    """The fine-tuning of a run: ``frozen`` and ``classifier`` parameter names, ``lr_mult``,
    ``source`` (the checkpoint loaded, or None) and ``notes`` (lines for the log)."""

    def __init__(self, frozen=(), classifier=(), lr_mult=1.0, source=None, freeze_spec=None):
        self.frozen, self.classifier = sorted(frozen), sorted(classifier)
        self.lr_mult, self.source, self.freeze_spec = float(lr_mult), source, freeze_spec
        self.notes = []

    @property
    def active(self):
        return bool(self.frozen or self.source or self.lr_mult != 1.0)

    def record(self) -> dict:
        """What the checkpoint's ``.json`` keeps (``finetune``)."""
        return {
            "pretrained": self.source,
            "freeze": self.freeze_spec,
            "frozen_params": len(self.frozen),
            "backbone_lr_mult": self.lr_mult,
        }


def parse_pretrained(text: str):
    """``(prefix, epoch or None)`` of ``PREFIX[:EPOCH]``."""
    prefix, sep, epoch = str(text).rpartition(":")
    if sep and epoch.isdigit() and prefix:
        return prefix, int(epoch)
    return str(text), None


def _graph(sym):
    return json.loads(sym.tojson())


def classifier_params(sym) -> list:
    """Parameter names of the layer feeding each ``SoftmaxOutput`` head (``fc1_weight``,
    ``fc1_bias`` ...), reached through flatten/dropout/activation nodes."""
    graph = _graph(sym)
    nodes, args = graph["nodes"], set(graph["arg_nodes"])
    found = []
    for head in graph["heads"]:
        node = nodes[head[0]]
        if node["op"] != "SoftmaxOutput":
            continue
        node = nodes[node["inputs"][0][0]]
        while node["op"] in _PASS_THROUGH and node["inputs"]:
            node = nodes[node["inputs"][0][0]]
        found += [nodes[i]["name"] for i, _, *_ in node["inputs"] if i in args and nodes[i]["name"] != "data"]
    return sorted(set(found))


def _learnable(sym):
    """Trainable argument names in graph order (no data, no labels)."""
    return [n for n in sym.list_arguments() if n != "data" and not n.endswith("_label")]


def frozen_params(sym, spec: str) -> list:
    """Parameter names ``--freeze spec`` fixes (see the module docstring); UsageError for an
    item that names nothing, or for freezing every parameter."""
    names, classifier = _learnable(sym), set(classifier_params(sym))
    frozen = set()
    for item in [i.strip() for i in str(spec).split(",") if i.strip()]:
        if item == "backbone":
            chosen = [n for n in names if n not in classifier]
        elif _GLOB.search(item):
            chosen = [n for n in names if fnmatch.fnmatchcase(n, item)]
        else:
            chosen = _up_to_unit(names, classifier, item)
        if not chosen:
            raise UsageError(
                "--freeze %r matches no parameter of this network (names look like "
                "%s); use a stage such as %s, 'backbone' or a pattern like 'stem_*'"
                % (item, ", ".join(names[:3]), " / ".join(_units(names)[:4]) or "-")
            )
        frozen.update(chosen)
    if not frozen:
        raise UsageError("--freeze %r names nothing; give a stage, 'backbone' or patterns" % spec)
    if frozen >= set(names):
        raise UsageError(
            "--freeze %r fixes every parameter; nothing would train (leave the "
            "classifier out, e.g. --freeze backbone)" % spec
        )
    return sorted(frozen)


def _units(names):
    """``stage1``, ``stage2`` ...: the numbered name prefixes, in graph order."""
    units = []
    for name in names:
        match = _UNIT.match(name)
        if match and match.group(1) not in units:
            units.append(match.group(1))
    return units


def _up_to_unit(names, classifier, unit):
    """Every parameter from the first up to the last one named ``unit_*``, classifier excluded."""
    last = max([i for i, n in enumerate(names) if n.startswith(unit + "_")], default=None)
    if last is None:
        return []
    return [n for n in names[: last + 1] if n not in classifier]


def frozen_symbol(sym, frozen):
    """``(symbol, count)``: ``sym`` with ``use_global_stats=True`` on each of the ``count``
    BatchNorms whose gamma and beta are both in ``frozen`` (it then normalises with, and
    keeps, its moving statistics).  Names and shapes are unchanged."""
    import mxnet as mx

    graph = _graph(sym)
    nodes, frozen = graph["nodes"], set(frozen)
    count = 0
    for node in nodes:
        if node["op"] not in ("BatchNorm", "_contrib_BatchNormWithReLU"):
            continue
        params = [nodes[i]["name"] for i, *_ in node["inputs"][1:3]]
        if len(params) == 2 and set(params) <= frozen:
            node.setdefault("attrs", {})["use_global_stats"] = "True"
            count += 1
    if not count:
        return sym, 0
    return mx.sym.load_json(json.dumps(graph)), count


# ---------------------------------------------------------------------------- --pretrained


def _checkpoint(text):
    """``(prefix, epoch, arg_params, aux_params, state)`` of ``--pretrained PREFIX[:EPOCH]``."""
    prefix, epoch = parse_pretrained(text)
    if epoch is None:
        epoch = ckpt.latest_epoch(prefix)
        if epoch is None:
            epoch = (ckpt.list_epochs(prefix) or [None])[-1]
        if epoch is None:
            raise UsageError(
                "--pretrained %s: no checkpoint there (no %s); give the prefix of a "
                "checkpoint, optionally with :EPOCH"
                % (text, ckpt.checkpoint_paths(prefix, 1)["params"].replace("0001", "NNNN"))
            )
    _, arg, aux = ckpt.load_params(prefix, epoch)  # CheckpointError: one line naming the file
    return prefix, epoch, arg, aux, ckpt.load_state(prefix, epoch)


def _other_classes(state, stats):
    """Why the checkpoint's classifier does not fit the data's classes by name, or None."""
    theirs = ((state or {}).get("preprocess") or {}).get("classes")
    ours = (stats or {}).get("classes")
    if theirs and ours and list(theirs) != list(ours):
        return "the checkpoint's classes (%s) are not the data's (%s)" % (
            ", ".join(map(str, theirs[:4])),
            ", ".join(map(str, ours[:4])),
        )
    return None


def _expected_shapes(job):
    from mxcnn.train import engines

    sym = job.symbol
    arg_shapes, _, aux_shapes = sym.infer_shape(
        **engines.input_shapes(sym, (1,) + tuple(job.image_shape), (1,))
    )
    return dict(zip(sym.list_arguments(), map(tuple, arg_shapes))), dict(
        zip(sym.list_auxiliary_states(), map(tuple, aux_shapes))
    )


def _merge(job, source, arg, aux, renew):
    """The run's initial ``(arg, aux)``: the initializer's values with every checkpoint tensor
    of matching name and shape in place; the log lines say what was not taken."""
    import mxnet as mx

    from mxcnn.train import engines

    mx.random.seed(job.args.seed)  # the initializer's values of a plain run (fit._make_engine)
    init_arg, init_aux = engines.initial_params(job.symbol, (1,) + tuple(job.image_shape), (1,))
    arg_shapes, aux_shapes = _expected_shapes(job)
    classifier = set(classifier_params(job.symbol))
    taken, differ, absent = [], [], []
    for params, saved, shapes in ((init_arg, arg, arg_shapes), (init_aux, aux, aux_shapes)):
        for name in params:
            if name not in saved:
                absent.append(name)
            elif tuple(saved[name].shape) != shapes[name]:
                differ.append("%s %s -> %s" % (name, tuple(saved[name].shape), shapes[name]))
            elif name in classifier and renew:
                differ.append("%s (%s)" % (name, renew))
            else:
                params[name] = saved[name].copy()
                taken.append(name)
    backbone = [n for n in taken if n in init_arg and n not in classifier]
    if not backbone:
        example = next(iter(arg.items()), ("nothing", None))
        raise UsageError(
            "--pretrained %s fits nothing of this network (%s-%s): none of its %d "
            "tensors has a name and shape the network uses (it holds e.g. %s %s); "
            "give a checkpoint of the same --network/--num-layers"
            % (
                source,
                job.args.network,
                job.args.num_layers,
                len(arg) + len(aux),
                example[0],
                tuple(example[1].shape) if example[1] is not None else "",
            )
        )
    unused = sorted((set(arg) | set(aux)) - set(init_arg) - set(init_aux))
    notes = ["pretrained: %d of %d tensors from %s" % (len(taken), len(init_arg) + len(init_aux), source)]
    if differ:
        notes.append("pretrained: re-initialised (other shape or classes): " + "; ".join(differ))
    if absent:
        notes.append("pretrained: not in the checkpoint, initialised: " + _short(absent))
    if unused:
        notes.append("pretrained: checkpoint tensors this network does not use: " + _short(unused))
    return init_arg, init_aux, notes


def _short(names, limit=6):
    names = list(names)
    return ", ".join(names[:limit]) + (" ... (%d more)" % (len(names) - limit) if len(names) > limit else "")


# ---------------------------------------------------------------------------- the run


def _check_resume(job, finetune):
    """A resumed run keeps the fine-tuning it was trained with (exact resume)."""
    saved = job.state.get("finetune") or {}
    mine = finetune.record()
    for key, flag in (("freeze", "--freeze"), ("backbone_lr_mult", "--backbone-lr-mult")):
        default = None if key == "freeze" else 1.0
        if saved.get(key, default) != mine[key]:
            raise UsageError(
                "the run under --model-prefix %s was trained with %s %s, this "
                "command gives %s; pass the same to continue it exactly"
                % (job.prefix, flag, saved.get(key, default), mine[key])
            )


def prepare(job) -> FineTune:
    """Check the fine-tuning flags against ``job`` (after ``job.prepare``) and, on a fresh
    start with ``--pretrained``, put the merged parameters into ``job.arg_params`` /
    ``job.aux_params``.  Sets and returns ``job.finetune``; UsageError for bad input."""
    args = job.args
    lr_mult = 1.0 if args.backbone_lr_mult is None else float(args.backbone_lr_mult)
    if not lr_mult >= 0 or lr_mult == float("inf"):
        raise UsageError(
            "--backbone-lr-mult must be >= 0 (0 keeps the backbone as loaded), got %r" % args.backbone_lr_mult
        )
    frozen = frozen_params(job.symbol, args.freeze) if args.freeze else []
    finetune = FineTune(frozen, classifier_params(job.symbol), lr_mult, None, args.freeze)
    if args.pretrained and not job.begin_epoch:
        prefix, epoch, arg, aux, state = _checkpoint(args.pretrained)
        source = ckpt.checkpoint_paths(prefix, epoch)["params"]
        job.arg_params, job.aux_params, finetune.notes = _merge(
            job, source, arg, aux, _other_classes(state, job.stats)
        )
        finetune.source = source
    elif job.begin_epoch:
        _check_resume(job, finetune)
        if args.pretrained:
            finetune.notes.append(
                "--pretrained is not read again: the run continues from its "
                "own checkpoint %d" % job.begin_epoch
            )
        finetune.source = (job.state.get("finetune") or {}).get("pretrained")
    job.finetune = finetune
    return finetune


def configure(config, job, sym, logger):
    """The training symbol (frozen BatchNorms in inference mode) with ``config`` set for the
    run's fine-tuning: fixed parameters, the backbone's lr multiplier, the checkpoint record."""
    finetune = getattr(job, "finetune", None)
    if finetune is None or not finetune.active:
        return sym
    for note in finetune.notes:
        logger.info("%s", note)
    config.state_extra = dict(config.state_extra, finetune=finetune.record())
    if finetune.frozen:
        config.fixed_params = list(finetune.frozen)
        sym, count = frozen_symbol(sym, finetune.frozen)
        logger.info(
            "--freeze %s: %d parameters fixed, %d BatchNorms in inference mode (moving statistics kept)",
            finetune.freeze_spec,
            len(finetune.frozen),
            count,
        )
    if finetune.lr_mult != 1.0:
        trained = [
            n for n in _learnable(job.symbol) if n not in finetune.classifier and n not in finetune.frozen
        ]
        config.lr_scales = {name: finetune.lr_mult for name in trained}
        logger.info(
            "--backbone-lr-mult %g on %d parameters (all but the classifier %s)",
            finetune.lr_mult,
            len(trained),
            ", ".join(finetune.classifier),
        )
    return sym
