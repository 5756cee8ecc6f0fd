"""Where other frameworks' pretrained weights go in this project's symbols, per family, as data.

``SOURCES[kind][arch]`` is an :class:`Arch`: the network of ``symbols.get_symbol`` and its
options (the same layout, parameter for parameter), and a :class:`Family` that says

* ``rules`` -- name rules (:mod:`.name_rules`) between the source's names and ours, used
  in both directions; shapes are the same on both sides (PyTorch, Gluon and our MXNet
  symbols store convolutions as (out, in/groups, kh, kw) and dense layers as (out, in));
* ``ignore`` -- source tensors without a counterpart that do not change the output
  (BatchNorm counters, auxiliary classifiers, which inference does not run);
* ``rewrites`` -- older spellings of source names, normalised first (DenseNet's
  ``norm.1`` of torchvision < 0.3);
* how the source computes differently, each mapped exactly: ``bn_eps`` (our symbol takes the
  source's epsilon), ``edits`` (attributes of our graph's nodes set to the source's, e.g.
  torchvision GoogLeNet's 2x2 pooling before inception5a; ``op: _copy`` removes an
  operator the source does not have; ``input`` rewires one; keys are regular expressions
  over node names), ``input_bn`` (the name template of a BatchNorm on the
  input, and whether its gamma is fixed to 1; folded into the preprocessing), ``fold_bn``
  (pairs of BatchNorm templates: the first folded into the second), ``transform``
  (a channel order: the option-A shortcut's zero padding in the middle), ``preprocess`` and
  ``options`` (torchvision's ``transform_input`` is a preprocessing of its own);
* ``refuse`` on an :class:`Arch` -- a difference this project's symbols cannot express.
"""
from collections import namedtuple

from mxcnn.inference.name_rules import BiasIntoBN, Rename, bn, conv, dense
from mxcnn.symbols import inception_v3 as inception_symbols
from mxcnn.symbols import vgg as vgg_symbols

__all__ = ["Family", "Arch", "SOURCES", "IMAGENET", "CIFAR", "CIFAR10_CLASSES", "find_arch"]

#: ImageNet's per-channel mean/std on the 0-255 scale (torchvision's and GluonCV's transforms).
IMAGENET = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
            "image_shape": [3, 224, 224]}
#: GluonCV's CIFAR transforms (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010), 0-255 scale.
CIFAR = {"mean": [125.307, 122.961, 113.8575], "std": [51.5865, 50.847, 51.255],
         "image_shape": [3, 32, 32]}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
#: What torchvision's ``transform_input=True`` does to ImageNet-normalised input: the network
#: sees (pixel/255 - 0.5) / 0.5, i.e. this preprocessing.
HALF_RANGE = {"mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]}

_FIELDS = ("framework rules bn_eps preprocess ignore rewrites edits input_bn fold_bn transform "
           "options classes")
_DEFAULTS = ((), (), {}, None, (), None, {}, None)


class Family(namedtuple("Family", _FIELDS, defaults=_DEFAULTS)):
    """How one family of source files maps onto our symbols (see the module docstring).

    ``framework``: 'torch', 'gluon' or 'mxnet' (which reader/writer); ``options``: source
    option -> (default, {value: preprocess override}); ``classes``: default class names."""

    __slots__ = ()


class Arch(namedtuple("Arch", "family network kwargs refuse", defaults=(None,))):
    """One source architecture: its :class:`Family`, our ``network`` and ``get_symbol`` kwargs."""

    __slots__ = ()


# ----------------------------------------------------------------------------- torchvision
_COUNTER = (r"(^|\.)num_batches_tracked$",)


def _unit(source, ours, vocab="bn_torch"):
    return conv(source + ".conv", ours + "_conv") + bn(source + ".bn", ours + "_bn", vocab)


def _resnet_v1b_rules(vocab):
    """torchvision's / GluonCV v1b's ResNet, ResNeXt and Wide ResNet names."""
    return (conv("conv1", "stem_conv") + bn("bn1", "stem_bn", vocab)
            + conv("layer{s}.{u}.conv{k+1}", "stage{s}_unit{u+1}_{k:letter}_conv")
            + bn("layer{s}.{u}.bn{k+1}", "stage{s}_unit{u+1}_{k:letter}_bn", vocab)
            + conv("layer{s}.{u}.downsample.0", "stage{s}_unit{u+1}_sc_conv")
            + bn("layer{s}.{u}.downsample.1", "stage{s}_unit{u+1}_sc_bn", vocab)
            + dense("fc", "fc1"))


TV_RESNET = Family("torch", tuple(_resnet_v1b_rules("bn_torch")), 1e-5, IMAGENET, _COUNTER)


def _vgg_rules(config, batch_norm):
    """torchvision's VGG numbers its ``features`` modules in order (conv, [BN], ReLU, ..., pool)."""
    rules, index = [], 0
    for stage, kernels in enumerate(vgg_symbols.CONFIGS[config], start=1):
        for i in range(1, len(kernels) + 1):
            ours = "conv%d_%d" % (stage, i)
            if batch_norm:
                rules += conv("features.%d" % index, ours + "_conv")
                rules.append(BiasIntoBN("features.%d.bias" % index, ours + "_bn"))
                rules += bn("features.%d" % (index + 1), ours + "_bn")
            else:
                rules += conv("features.%d" % index, ours + "_conv", bias=True)
            index += 3 if batch_norm else 2
        index += 1
    return tuple(rules + dense("classifier.0", "fc6") + dense("classifier.3", "fc7")
                 + dense("classifier.6", "fc1"))


def _vgg(config, batch_norm):
    family = Family("torch", _vgg_rules(config, batch_norm), 1e-5, IMAGENET, _COUNTER)
    return Arch(family, "vgg", {"config": config, "batch_norm": batch_norm, "style": "imagenet"})


TV_DENSENET = Family("torch", tuple(
    conv("features.conv0", "stem_conv") + bn("features.norm0", "stem_bn")
    + bn("features.denseblock{b}.denselayer{l}.norm1", "block{b}_layer{l}_bottleneck_bn")
    + conv("features.denseblock{b}.denselayer{l}.conv1", "block{b}_layer{l}_bottleneck_conv")
    + bn("features.denseblock{b}.denselayer{l}.norm2", "block{b}_layer{l}_bn")
    + conv("features.denseblock{b}.denselayer{l}.conv2", "block{b}_layer{l}_conv")
    + bn("features.transition{t}.norm", "transition{t}_bn")
    + conv("features.transition{t}.conv", "transition{t}_conv")
    + bn("features.norm5", "final_bn") + dense("classifier", "fc1")), 1e-5, IMAGENET, _COUNTER,
    rewrites=((r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|"
               r"running_var))$", r"\1\2"),))

TV_MOBILENET_V2 = Family("torch", tuple(
    conv("features.0.0", "stem_conv") + bn("features.0.1", "stem_bn")
    + conv("features.1.conv.0.0", "block1_dw_conv") + bn("features.1.conv.0.1", "block1_dw_bn")
    + conv("features.1.conv.1", "block1_project_conv") + bn("features.1.conv.2", "block1_project_bn")
    + conv("features.{b}.conv.0.0", "block{b}_expand_conv")
    + bn("features.{b}.conv.0.1", "block{b}_expand_bn")
    + conv("features.{b}.conv.1.0", "block{b}_dw_conv") + bn("features.{b}.conv.1.1", "block{b}_dw_bn")
    + conv("features.{b}.conv.2", "block{b}_project_conv")
    + bn("features.{b}.conv.3", "block{b}_project_bn")
    + conv("features.18.0", "last_conv") + bn("features.18.1", "last_bn")
    + dense("classifier.1", "fc1")), 1e-5, IMAGENET, _COUNTER)

_GOOGLENET_BRANCHES = (("branch1", "1x1"), ("branch2.0", "3x3_reduce"), ("branch2.1", "3x3"),
                       ("branch3.0", "5x5_reduce"), ("branch3.1", "5x5"), ("branch4.1", "pool_proj"))
TV_GOOGLENET = Family(
    "torch", tuple(_unit("conv1", "conv1") + _unit("conv2", "conv2_reduce") + _unit("conv3", "conv2")
                   + sum((_unit("inception{m:word}." + src, "inception{m:word}_" + ours)
                          for src, ours in _GOOGLENET_BRANCHES), [])
                   + dense("fc", "fc1")),
    1e-3, IMAGENET, _COUNTER + (r"^aux[12]\.",), edits={"pool4": {"kernel": "(2, 2)"}},
    options={"transform_input": (True, {True: HALF_RANGE})})

_INCEPTION_STEM = (("Conv2d_1a_3x3", "conv1a"), ("Conv2d_2a_3x3", "conv2a"),
                   ("Conv2d_2b_3x3", "conv2b"), ("Conv2d_3b_1x1", "conv3b"), ("Conv2d_4a_3x3", "conv4a"))
#: torchvision's branch names per Inception module type -> ours (symbols/inception_v3.py).
_INCEPTION_BRANCHES = {
    "module_a": (("branch1x1", "1x1"), ("branch5x5_1", "5x5_reduce"), ("branch5x5_2", "5x5"),
                 ("branch3x3dbl_1", "dbl_reduce"), ("branch3x3dbl_2", "dbl_0"),
                 ("branch3x3dbl_3", "dbl_1"), ("branch_pool", "pool_proj")),
    "reduction_a": (("branch3x3", "3x3"), ("branch3x3dbl_1", "dbl_reduce"),
                    ("branch3x3dbl_2", "dbl_0"), ("branch3x3dbl_3", "dbl_1")),
    "module_c": (("branch1x1", "1x1"), ("branch7x7_1", "7x7_reduce"), ("branch7x7_2", "7x7_0"),
                 ("branch7x7_3", "7x7_1"), ("branch7x7dbl_1", "dbl_reduce"),
                 ("branch7x7dbl_2", "dbl_0"), ("branch7x7dbl_3", "dbl_1"),
                 ("branch7x7dbl_4", "dbl_2"), ("branch7x7dbl_5", "dbl_3"), ("branch_pool", "pool_proj")),
    "reduction_b": (("branch3x3_1", "3x3_reduce"), ("branch3x3_2", "3x3"),
                    ("branch7x7x3_1", "7x7x3_reduce"), ("branch7x7x3_2", "7x7x3_0"),
                    ("branch7x7x3_3", "7x7x3_1"), ("branch7x7x3_4", "7x7x3_2")),
    "module_e": (("branch1x1", "1x1"), ("branch3x3_1", "3x3_reduce"), ("branch3x3_2a", "3x3_a"),
                 ("branch3x3_2b", "3x3_b"), ("branch3x3dbl_1", "dbl_reduce"),
                 ("branch3x3dbl_2", "dbl_0"), ("branch3x3dbl_3a", "dbl_a"),
                 ("branch3x3dbl_3b", "dbl_b"), ("branch_pool", "pool_proj")),
}


def _inception_rules():
    """Stem units, then each module of our LAYOUT with its type's branch names."""
    rules = sum((_unit(src, ours) for src, ours in _INCEPTION_STEM), [])
    for name, builder, _ in inception_symbols.LAYOUT:
        source = "Mixed_" + name[len("mixed"):]
        for branch, ours in _INCEPTION_BRANCHES[builder.__name__]:
            rules += _unit("%s.%s" % (source, branch), "%s_%s" % (name, ours))
    return tuple(rules + dense("fc", "fc1"))


TV_INCEPTION_V3 = Family(
    "torch", _inception_rules(), 1e-3, dict(IMAGENET, image_shape=[3, 299, 299]),
    _COUNTER + (r"^AuxLogits\.",), options={"transform_input": (True, {True: HALF_RANGE})})

TV_ALEXNET = Family("torch", tuple(
    sum((conv("features.%d" % index, "conv%d_conv" % (i + 1), bias=True)
         for i, index in enumerate((0, 3, 6, 8, 10))), [])
    + dense("classifier.1", "fc6") + dense("classifier.4", "fc7") + dense("classifier.6", "fc1")),
    1e-5, IMAGENET, _COUNTER)


def _torchvision():
    archs = {"resnet%d" % d: Arch(TV_RESNET, "resnet", {"num_layers": d, "style": "imagenet"})
             for d in (18, 34, 50, 101, 152)}
    for name, depth, groups, width in (("resnext50_32x4d", 50, 32, 4), ("resnext101_32x8d", 101, 32, 8),
                                       ("resnext101_64x4d", 101, 64, 4),
                                       ("wide_resnet50_2", 50, 1, 128), ("wide_resnet101_2", 101, 1, 128)):
        archs[name] = Arch(TV_RESNET, "resnext", {"num_layers": depth, "cardinality": groups,
                                                  "bottleneck_width": width, "style": "imagenet"})
    for depth, config in sorted(vgg_symbols.DEPTH_CONFIG.items()):
        archs["vgg%d" % depth] = _vgg(config, False)
        archs["vgg%d_bn" % depth] = _vgg(config, True)
    for depth in (121, 161, 169, 201):
        archs["densenet%d" % depth] = Arch(TV_DENSENET, "densenet", {"num_layers": depth,
                                                                     "style": "imagenet"})
    archs["mobilenet_v2"] = Arch(TV_MOBILENET_V2, "mobilenet_v2", {"style": "imagenet"})
    archs["googlenet"] = Arch(TV_GOOGLENET, "googlenet", {"batch_norm": True, "style": "imagenet"})
    archs["inception_v3"] = Arch(TV_INCEPTION_V3, "inception_v3", {})
    archs["alexnet"] = Arch(TV_ALEXNET, "alexnet", {"style": "imagenet"})
    return archs


# ----------------------------------------------------------------------------- CIFAR (PyTorch)
#: akamaster/pytorch_resnet_cifar10: option-A shortcuts pad planes//4 zero channels on each side.
AKAMASTER = Family("torch", tuple(
    conv("conv1", "stem_conv") + bn("bn1", "stem_bn")
    + conv("layer{s}.{u}.conv{k+1}", "stage{s}_unit{u+1}_{k:letter}_conv")
    + bn("layer{s}.{u}.bn{k+1}", "stage{s}_unit{u+1}_{k:letter}_bn") + dense("linear", "fc1")),
    1e-5, dict(IMAGENET, image_shape=[3, 32, 32]), _COUNTER, transform="option_a",
    classes=CIFAR10_CLASSES)


def _akamaster():
    return {"resnet%d" % d: Arch(AKAMASTER, "resnet", {"num_layers": d, "shortcut_type": "A",
                                                       "bottleneck": False, "style": "cifar"})
            for d in (20, 32, 44, 56, 110, 1202)}


# ----------------------------------------------------------------------------- GluonCV
def _gluon_unit(source, ours):
    return conv(source + ".0", ours + "_conv") + bn(source + ".1", ours + "_bn", "bn_gluon")


def _gluon_body(stage_offset, letters_at):
    """``features.<s+offset>.<u>.body.<i>`` (conv i, BN i+1) and ``downsample.0/1``."""
    rules = []
    for letter, index in letters_at:
        src = "features.{s%+d}.{u}.body." % stage_offset
        rules += conv(src + str(index), "stage{s}_unit{u+1}_%s_conv" % letter)
        rules += bn(src + str(index + 1), "stage{s}_unit{u+1}_%s_bn" % letter, "bn_gluon")
    return rules + _gluon_unit("features.{s%+d}.{u}.downsample" % stage_offset, "stage{s}_unit{u+1}_sc")


GLUON_CIFAR_V1 = Family("gluon", tuple(
    conv("features.0", "stem_conv") + bn("features.1", "stem_bn", "bn_gluon")
    + _gluon_body(1, (("a", 0), ("b", 3))) + dense("output", "fc1")),
    1e-5, CIFAR, edits={"stem_relu": {"op": "_copy"}}, classes=CIFAR10_CLASSES)


def _gluon_preact(first_stage, post):
    rules = conv("features.1", "stem_conv")
    for k, letter in ((1, "a"), (2, "b")):
        rules += bn("features.{s%+d}.{u}.bn%d" % (first_stage - 1, k), "stage{s}_unit{u+1}_%s_bn" % letter,
                    "bn_gluon")
        rules += conv("features.{s%+d}.{u}.conv%d" % (first_stage - 1, k),
                      "stage{s}_unit{u+1}_%s_conv" % letter)
    rules += conv("features.{s%+d}.{u}.downsample" % (first_stage - 1), "stage{s}_unit{u+1}_sc_conv")
    return tuple(rules + bn("features.%d" % post, "post_bn", "bn_gluon") + dense("output", "fc1"))


#: GluonCV's CIFAR v2 unit projects its raw input (ours and its WRN: the pre-activated one).
GLUON_CIFAR_V2 = Family("gluon", _gluon_preact(2, 5), 1e-5, CIFAR,
                        input_bn=("features.0.{p:bn_gluon}", True), classes=CIFAR10_CLASSES,
                        edits={r"(stage\d+_unit1)_sc_conv": {"input": r"\1_a_bn"}})
GLUON_CIFAR_WRN = Family("gluon", _gluon_preact(3, 6), 1e-5, CIFAR,
                         input_bn=("features.0.{p:bn_gluon}", True),
                         fold_bn=(("features.2.{p:bn_gluon}", "features.3.0.bn1.{p:bn_gluon}"),),
                         classes=CIFAR10_CLASSES)
GLUON_CIFAR_RESNEXT = Family("gluon", tuple(
    conv("features.0", "stem_conv") + bn("features.1", "stem_bn", "bn_gluon")
    + _gluon_body(2, (("a", 0), ("b", 3), ("c", 6))) + dense("output", "fc1")),
    1e-5, CIFAR, classes=CIFAR10_CLASSES)
GLUON_V1B = Family("gluon", tuple(_resnet_v1b_rules("bn_gluon")), 1e-5, IMAGENET)
GLUON_V1 = Family("gluon", tuple(
    conv("features.0", "stem_conv") + bn("features.1", "stem_bn", "bn_gluon")
    + _gluon_body(3, (("a", 0), ("b", 3))) + dense("output", "fc1")), 1e-5, IMAGENET)

_V1_STRIDE = ("GluonCV's resnet%d_v1 strides the first 1x1 convolution of each bottleneck, this "
              "project's ResNet strides the 3x3 (GluonCV's v1b): use the resnet%d_v1b weights")


def _gluoncv():
    archs = {}
    for depth in (20, 56, 110):
        archs["cifar_resnet%d_v1" % depth] = Arch(GLUON_CIFAR_V1, "resnet", {
            "num_layers": depth, "bottleneck": False, "style": "cifar"})
        archs["cifar_resnet%d_v2" % depth] = Arch(GLUON_CIFAR_V2, "preact_resnet", {
            "num_layers": depth, "bottleneck": False, "style": "cifar"})
    for depth, width in ((16, 10), (28, 10), (40, 8)):
        archs["cifar_wideresnet%d_%d" % (depth, width)] = Arch(GLUON_CIFAR_WRN, "wrn", {
            "num_layers": depth, "widen_factor": width, "style": "cifar"})
    for groups, width in ((16, 64), (32, 4)):
        archs["cifar_resnext29_%dx%dd" % (groups, width)] = Arch(GLUON_CIFAR_RESNEXT, "resnext", {
            "num_layers": 29, "cardinality": groups, "bottleneck_width": width, "style": "cifar"})
    for depth in (18, 34, 50, 101, 152):
        kwargs = {"num_layers": depth, "style": "imagenet"}
        archs["resnet%d_v1b" % depth] = Arch(GLUON_V1B, "resnet", kwargs)
        archs["resnet%d_v1" % depth] = Arch(GLUON_V1, "resnet", kwargs,
                                            refuse=_V1_STRIDE % (depth, depth) if depth >= 50 else None)
    return archs


# ----------------------------------------------------------------------------- MXNet examples
#: MXNet's example/image-classification/symbols/resnet.py (pre-activation, ``bn_data`` input BN).
MXNET_RESNET = Family("mxnet", (
    Rename("conv0_weight", "stem_conv_weight"), Rename("bn0_{p:bn_ours}", "stem_bn_{p:bn_ours}"),
    Rename("stage{s}_unit{u}_bn{k+1}_{p:bn_ours}", "stage{s}_unit{u}_{k:letter}_bn_{p:bn_ours}"),
    Rename("stage{s}_unit{u}_conv{k+1}_weight", "stage{s}_unit{u}_{k:letter}_conv_weight"),
    Rename("stage{s}_unit{u}_sc_weight", "stage{s}_unit{u}_sc_conv_weight"),
    Rename("bn1_{p:bn_ours}", "post_bn_{p:bn_ours}"), Rename("fc1_{p:wb}", "fc1_{p:wb}")),
    2e-5, {"mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0], "image_shape": [3, 224, 224]},
    input_bn=("bn_data_{p:bn_ours}", True))
MXNET_RESNET_CIFAR = MXNET_RESNET._replace(preprocess={
    "mean": [125.307, 122.961, 113.8575], "std": [1.0, 1.0, 1.0], "image_shape": [3, 32, 32]},
    classes=CIFAR10_CLASSES)


_MXNET_BASIC = ("MXNet's example gives the first unit of every stage a projection shortcut, even "
                "where its shape does not change (%s: stage1_unit1, %d -> %d channels); this "
                "project's pre-activation ResNet keeps that shortcut an identity, so the "
                "basic-unit depths do not map")


def _mxnet():
    archs = {}
    for depth in (18, 34, 50, 101, 152, 200, 269):
        refuse = _MXNET_BASIC % ("resnet%d" % depth, 64, 64) if depth < 50 else None
        archs["resnet%d" % depth] = Arch(MXNET_RESNET, "preact_resnet",
                                         {"num_layers": depth, "style": "imagenet"}, refuse)
    for depth in (20, 56, 110, 164, 1001):
        refuse = _MXNET_BASIC % ("resnet%d_cifar" % depth, 16, 16) if depth < 164 else None
        archs["resnet%d_cifar" % depth] = Arch(MXNET_RESNET_CIFAR, "preact_resnet",
                                               {"num_layers": depth, "style": "cifar"}, refuse)
    return archs


SOURCES = {"torchvision": _torchvision(), "akamaster": _akamaster(), "gluoncv": _gluoncv(),
           "mxnet": _mxnet()}


def find_arch(spec: str) -> tuple[str, str, Arch]:
    """``(kind, arch name, Arch)`` for ``"torchvision:resnet50"``; UserError listing the choices."""
    from mxcnn import common
    kind, _, name = str(spec).partition(":")
    if kind not in SOURCES:
        raise common.UserError("unknown source %r; write KIND:ARCH with KIND one of %s (e.g. "
                               "torchvision:resnet50)" % (spec, ", ".join(sorted(SOURCES))))
    if name not in SOURCES[kind]:
        raise common.UserError("%s has no architecture %r; choose one of: %s"
                               % (kind, name, ", ".join(sorted(SOURCES[kind]))))
    return kind, name, SOURCES[kind][name]
