"""``convert.py --check``: the source framework's own forward against ours, on one batch.

A batch of random pixels (seeded, 0-255 RGB) is normalised twice: with our checkpoint's
preprocessing for our network, and with the source's own for the source's network (they
differ where a conversion folded an input BatchNorm or torchvision's ``transform_input``
into our preprocessing, which this comparison then covers).  The source runs in its own
framework: PyTorch through ``--torch-python`` in a subprocess (inference/torch_reference.py,
which loads the file with ``torch.load(weights_only=True)`` and ``strict=True``), GluonCV
through its model zoo and ``load_parameters``, an MXNet example checkpoint through its own
``PREFIX-symbol.json``.  Reported: the largest absolute logit difference, that difference
relative to the largest source logit, and top-1 agreement.
"""
import argparse
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence

import numpy as np

from mxcnn import common
from mxcnn.inference import weight_maps
from mxcnn.inference.weight_graph import logits_symbol

__all__ = ["random_pixels", "normalise", "our_logits", "source_logits", "compare",
           "check_import", "check_export", "describe_import", "describe_export", "describe_check"]

REFERENCE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
SEED = 20240501
BATCH = 16


def random_pixels(count: int, image_shape: Sequence[int], seed: int = SEED) -> np.ndarray:
    """(count, H, W, C) uint8 pixels."""
    channels, height, width = image_shape
    return np.random.RandomState(seed).randint(0, 256, (count, height, width, channels)).astype(np.uint8)


def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, C, H, W) float32: ``(pixels - mean) / std`` per channel."""
    mean = np.asarray(mean, np.float32)[:pixels.shape[-1]]
    std = np.asarray(std, np.float32)[:pixels.shape[-1]]
    return ((pixels.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy()


def _mxnet_logits(sym, arg, aux, inputs):
    from mxcnn.inference.predict import bind_inference, numpy_forward
    logits = logits_symbol(sym)
    batch = min(BATCH, len(inputs))
    forward = numpy_forward(bind_inference(logits, "data", (batch,) + inputs.shape[1:], arg, aux))
    out = []
    for start in range(0, len(inputs), batch):
        chunk = np.zeros((batch,) + inputs.shape[1:], np.float32)
        real = inputs[start:start + batch]
        chunk[:len(real)] = real
        out.append(forward(chunk)[:len(real)])
    return np.concatenate(out)


def our_logits(prefix: str, epoch: int, inputs: np.ndarray) -> np.ndarray:
    """Logits of checkpoint ``prefix``/``epoch`` (read back from disk) for (N, C, H, W) inputs."""
    from mxcnn.inference import checkpoint
    sym, arg, aux = checkpoint.load_params(prefix, epoch)
    return _mxnet_logits(sym, arg, aux, inputs)


def torch_logits(torch_python: str | None, kind: str, arch: str, num_classes: int, options: dict,
                 weights: str, inputs: np.ndarray) -> np.ndarray:
    """Logits of the PyTorch model ``kind``/``arch`` with ``weights``, run by ``torch_python``."""
    if not torch_python:
        raise common.UserError("--check of a PyTorch file needs --torch-python PATH: a Python "
                               "with torch and torchvision (e.g. .venv-torch/bin/python)")
    if not os.path.isfile(torch_python):
        raise common.UserError("--torch-python %s does not exist" % torch_python)
    with tempfile.TemporaryDirectory(prefix="mxcnn-check-") as work:
        job = {"action": "forward", "kind": kind, "arch": arch, "num_classes": num_classes,
               "options": options, "weights": os.path.abspath(weights),
               "inputs": os.path.join(work, "x.npy"), "output": os.path.join(work, "y.npy"),
               "threads": common.usable_cores()}
        np.save(job["inputs"], inputs)
        run = subprocess.run([torch_python, REFERENCE_SCRIPT, json.dumps(job)],
                             capture_output=True, text=True, timeout=1800)
        if run.returncode != 0:
            lines = [l for l in run.stderr.splitlines() if l.strip()] or ["exit %d" % run.returncode]
            raise common.UserError("the PyTorch forward failed: %s" % lines[-1][:300])
        return np.load(job["output"])


def gluon_logits(arch: str, num_classes: int, params: str, inputs: np.ndarray) -> np.ndarray:
    """Logits of GluonCV's model-zoo ``arch`` with ``params`` loaded."""
    import mxnet as mx
    from gluoncv import model_zoo
    net = model_zoo.get_model(arch, classes=num_classes, pretrained=False)
    try:
        net.load_parameters(params, ctx=mx.cpu())
    except (AssertionError, mx.base.MXNetError) as err:
        raise common.UserError("GluonCV cannot load %s into %s: %s"
                               % (params, arch, common.error_line(err, 200))) from None
    return np.concatenate([net(mx.nd.array(inputs[i:i + BATCH])).asnumpy()
                           for i in range(0, len(inputs), BATCH)])


def mxnet_example_logits(params: str, inputs: np.ndarray) -> np.ndarray:
    """Logits of an MXNet checkpoint run by its own ``PREFIX-symbol.json`` beside ``params``."""
    import re

    import mxnet as mx
    match = re.match(r"(.*)-\d{4,}\.params$", params)
    symbol_path = (match.group(1) if match else "") + "-symbol.json"
    if not match or not os.path.isfile(symbol_path):
        raise common.UserError("--check of an MXNet checkpoint needs its PREFIX-symbol.json beside "
                               "PREFIX-NNNN.params; %s not found" % (symbol_path or params))
    sym = mx.sym.load(symbol_path)
    arrays = mx.nd.load(params)
    arg = {k[4:]: v for k, v in arrays.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in arrays.items() if k.startswith("aux:")}
    return _mxnet_logits(sym, arg, aux, inputs)


def source_logits(kind: str, arch_name: str, arch: weight_maps.Arch, path: str,
                  inputs: np.ndarray, num_classes: int, options: dict,
                  torch_python: str | None) -> np.ndarray:
    """Logits of the source framework's own model ``kind``/``arch_name`` with the file ``path``."""
    framework = arch.family.framework
    if framework == "torch":
        return torch_logits(torch_python, kind, arch_name, num_classes, options, path, inputs)
    if framework == "gluon":
        return gluon_logits(arch_name, num_classes, path, inputs)
    return mxnet_example_logits(path, inputs)


def compare(ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> dict:
    """``{max_abs, relative, top1, count, ok}`` of our logits against the source's."""
    if ours.shape != theirs.shape:
        raise common.UserError("the source gives logits of shape %s, ours %s"
                               % (theirs.shape, ours.shape))
    max_abs = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
    relative = max_abs / max(float(np.max(np.abs(theirs))), 1e-30)
    top1 = int(np.sum(np.argmax(ours, 1) == np.argmax(theirs, 1)))
    return {"max_abs": max_abs, "relative": relative, "top1": top1, "count": len(ours),
            "tolerance": tolerance, "ok": relative <= tolerance and top1 == len(ours)}


def check_import(summary: dict, path: str, prefix: str, args: argparse.Namespace) -> dict:
    """Compare the imported checkpoint with the source file's own forward."""
    kind, arch_name = summary["kind"], summary["arch"]
    arch = weight_maps.SOURCES[kind][arch_name]
    pixels = random_pixels(args.check_batch, summary["image_shape"])
    ours = our_logits(prefix, 0, normalise(pixels, summary["preprocess"]["mean"],
                                           summary["preprocess"]["std"]))
    source = arch.family.preprocess
    theirs = source_logits(kind, arch_name, arch, path, normalise(pixels, source["mean"], source["std"]),
                           summary["num_classes"], summary["options"], args.torch_python)
    return compare(ours, theirs, args.tolerance)


def check_export(summary: dict, prefix: str, args: argparse.Namespace) -> dict:
    """Compare the checkpoint with the exported file run by the target framework."""
    kind, arch_name = summary["kind"], summary["arch"]
    arch = weight_maps.SOURCES[kind][arch_name]
    record = summary["preprocess"] or {}
    pixels = random_pixels(args.check_batch, summary["image_shape"])
    inputs = normalise(pixels, record.get("mean", (0, 0, 0)), record.get("std", (1, 1, 1)))
    ours = our_logits(prefix, summary["epoch"], inputs)
    options = {name: False for name in arch.family.options}  # our preprocessing already applies
    theirs = source_logits(kind, arch_name, arch, summary["path"], inputs, summary["num_classes"],
                           options, args.torch_python)
    return compare(ours, theirs, args.tolerance)


def describe_import(summary: dict, seconds: float) -> str:
    """What an import wrote, for the command line."""
    pre = summary["preprocess"]
    lines = ["imported %s: %d tensors, %d classes, input %s -> %s (mean %s, std %s; %.1f s)"
             % (summary["source"], summary["tensors"], summary["num_classes"],
                "x".join(map(str, summary["image_shape"])), summary["paths"]["params"],
                _numbers(pre["mean"]), _numbers(pre["std"]), seconds)]
    if summary["ignored"]:
        lines.append("note: left out %d source tensors that inference does not use (%s)"
                     % (len(summary["ignored"]), common.short_list(summary["ignored"], 3)))
    return "\n".join(lines)


def describe_export(summary: dict, seconds: float) -> str:
    """What an export wrote and the preprocessing its model needs."""
    pre = summary["preprocess"] or {}
    lines = ["exported epoch %d as %s: %d tensors -> %s (%.1f s); feed it images normalised with "
             "mean %s, std %s (0-255 RGB)" % (summary["epoch"], summary["target"], summary["tensors"],
                                              summary["path"], seconds, _numbers(pre.get("mean", [0] * 3)),
                                              _numbers(pre.get("std", [1] * 3)))]
    if summary["left_out"]:
        lines.append("note: left out %d tensors of auxiliary heads (%s)"
                     % (len(summary["left_out"]), common.short_list(summary["left_out"], 3)))
    return "\n".join(lines)


def describe_check(result: dict) -> str:
    """One line: the logit differences and top-1 agreement, ok or FAILED."""
    return ("check: %d images, logits max abs diff %.3g, relative %.3g (tolerance %.3g), top-1 "
            "agreement %d/%d: %s" % (result["count"], result["max_abs"], result["relative"],
                                     result["tolerance"], result["top1"], result["count"],
                                     "ok" if result["ok"] else "FAILED"))


def _numbers(values):
    return ",".join("%.4g" % v for v in values)
