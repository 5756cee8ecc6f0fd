"""The PyTorch side of weight conversion, run by an interpreter that has torch (and torchvision).

Standalone on purpose (no mxcnn import): inference/convert.py runs it with ``--torch-python``
in a subprocess, and the tests use it to write random-weight source files.  One JSON
argument says what to do::

    {"action": "forward", "kind": "torchvision", "arch": "resnet50", "num_classes": 1000,
     "options": {"transform_input": true}, "weights": "w.pth", "inputs": "x.npy", "output": "y.npy"}
    {"action": "random", "kind": "akamaster", "arch": "resnet20", "num_classes": 10,
     "output": "w.th", "legacy": true, "wrap": true, "seed": 0}

A JSON list runs several jobs in one process (torch starts once); ``--serve`` reads one
job per line from stdin and answers each with a line.
``forward`` loads the state_dict with ``torch.load(weights_only=True)`` into the model with
``strict=True`` and saves its eval-mode logits for the (N, C, H, W) float32 inputs.
``random`` saves a randomly initialised model's state_dict, BatchNorm statistics and affine
parameters drawn at random too; ``legacy`` uses torch's pre-1.6 format, ``wrap`` saves
``{"state_dict": ..., "best_prec1": ...}`` with DataParallel's ``module.`` prefixes.

torchvision's registry wheel is a CUDA build whose compiled operators do not load beside the
CPU torch wheel; the models are plain Python, so ``torchvision._meta_registrations`` (which
registers those operators) is replaced by an empty module before the import.
"""
import json
import re
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _Shortcut(nn.Module):
    """akamaster's option-A shortcut: subsample by 2, pad planes//4 zero channels each side."""

    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)


class _BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _Shortcut(planes) if stride != 1 or in_planes != planes else nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class AkamasterResNet(nn.Module):
    """akamaster/pytorch_resnet_cifar10's ResNet-(6n+2) with option-A shortcuts."""

    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for index, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(_BasicBlock(planes, width, 2 if index and not j else 1))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return self.linear(out)


def torchvision_models() -> types.ModuleType:
    """``torchvision.models``, imported without its compiled operators (module docstring)."""
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    return torchvision.models


def build(kind: str, arch: str, num_classes: int, options: dict) -> nn.Module:
    """The source model, eval mode, without auxiliary classifiers."""
    if kind == "akamaster":
        return AkamasterResNet(int(arch[len("resnet"):]), num_classes).eval()
    kwargs = {"weights": None, "num_classes": num_classes}
    if arch in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False,
                      transform_input=bool(options.get("transform_input", False)))
    return getattr(torchvision_models(), arch)(**kwargs).eval()


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters (the defaults are 0/1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.num_batches_tracked.fill_(7)
    return model


def save_random(job: dict) -> None:
    """The ``random`` action: a random-weight model's state_dict to ``job['output']``."""
    torch.manual_seed(job.get("seed", 0))
    model = randomise(build(job["kind"], job["arch"], job["num_classes"], job.get("options", {})),
                      job.get("seed", 0))
    state = model.state_dict()
    if job.get("wrap"):
        state = {"state_dict": {"module." + k: v for k, v in state.items()}, "best_prec1": 91.7}
    torch.save(state, job["output"], _use_new_zipfile_serialization=not job.get("legacy"))


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")


def unwrap(state: dict) -> dict:
    """The state_dict inside a training checkpoint, without DataParallel's ``module.`` prefix."""
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def forward(job: dict) -> None:
    """The ``forward`` action: logits of ``job['inputs']`` to ``job['output']`` (.npy)."""
    model = build(job["kind"], job["arch"], job["num_classes"], job.get("options", {}))
    state = unwrap(torch.load(job["weights"], weights_only=True))
    if job["arch"].startswith("densenet"):  # torchvision < 0.3 spelled norm1 as norm.1
        state = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2.", k): v
                 for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    inputs = torch.from_numpy(np.load(job["inputs"]))
    with torch.no_grad():
        logits = model(inputs)
    np.save(job["output"], logits.numpy().astype(np.float32))


def run(jobs: dict | list) -> None:
    """One job (a dict) or several (a list), in order."""
    for job in jobs if isinstance(jobs, list) else [jobs]:
        torch.set_num_threads(max(1, int(job.get("threads", 2))))
        {"forward": forward, "random": save_random}[job["action"]](job)


def serve() -> None:
    """``--serve``: run one JSON job (or list) per stdin line, answer ``ok`` or ``error: ...``."""
    for line in sys.stdin:
        try:
            run(json.loads(line))
            print("ok", flush=True)
        except Exception as err:  # reported to the caller, which fails its test with it
            print("error: %s: %s" % (type(err).__name__, str(err).replace("\n", " ")[:2000]),
                  flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = argv or sys.argv[1:]
    if argv[0] == "--serve":
        serve()
    else:
        run(json.loads(argv[0]))


if __name__ == "__main__":
    main()
