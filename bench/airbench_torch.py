"""The PyTorch peer of ``--preset fast`` and ``--preset fast92``: airbench94 and airbench95
(Jordan 2024, arXiv:2404.00498) on the CPU.

    .venv-torch/bin/python bench/airbench_torch.py --data WORK/cifar10-pixels.npz --out WORK/torch.jsonl
    .venv-torch/bin/python bench/airbench_torch.py --recipe airbench95 --data ... --out ...

Written from the paper's description (Sec. 3), fp32, eager mode:

* network: 2x2 patch-whitening conv (24 filters, weight frozen at the whitening of 5,000
  training images, bias trained for the first 3 epochs), GELU, then three groups
  conv-maxpool-BN-GELU-conv-BN-GELU of widths 64/256/256, 3x3 max pool, linear (no bias),
  x 1/9.  BatchNorm: scales frozen at 1, momentum 0.6, eps 1e-12.  Dirac init.
* optimisation: Nesterov SGD, momentum 0.85, batch 1024, summed label-smoothed (0.2) loss,
  lr 11.5 and wd 0.0153 "per 1024 examples" (divided by 1024 * (1 + 1/(1 - momentum))),
  BN biases at 64x lr, triangular schedule 0.2 -> 1 (23% of the steps) -> 0.07, 9.9 epochs,
  lookahead every 5 steps towards an EMA with decay 0.95^5 * (progress)^3.
* ``--recipe airbench95`` (:data:`RECIPES`): widths 128/384/384, lr 10.0, 15 epochs; the rest
  as above.
* data: alternating flip (random in epoch 0, then each image mirrored every other epoch)
  and random translation by up to 2 pixels with reflection padding.
* evaluation after every epoch on the test images, TTA = the mean probability over the
  image, its two one-pixel diagonal shifts and the mirrors of all three (inference/tta.py's
  ``flip,translate``, the same views the MXNet run averages).

``--dtype bfloat16`` runs every forward pass (training and evaluation) under PyTorch's CPU
autocast to bfloat16 (weights, optimizer and BatchNorm statistics stay float32), the peer's
fastest mode on CPUs with avx512_bf16 or AMX; the tensors are channels_last either way.

The pixels come from ``--data`` (written by bench/time_to_accuracy.py from the same .rec
files the MXNet trainer reads), so both see identical decoded images and the same
normalisation.  One JSON line per epoch goes to ``--out`` as soon as it is known.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
from mxcnn.common import usable_cores  # noqa: E402  (import-light, no MXNet)

#: What differs between the paper's recipes: widths, lr per 1024 examples, epochs.
RECIPES = {"airbench94": dict(widths=(64, 256, 256), lr=11.5, epochs=9.9),
           "airbench95": dict(widths=(128, 384, 384), lr=10.0, epochs=15.0)}
BATCH = 1024
WD, MOMENTUM, BIAS_SCALE = 0.0153, 0.85, 64.0
SMOOTHING = 0.2
WHITEN_BIAS_EPOCHS = 3
TRANSLATE = 2


class Norm(nn.BatchNorm2d):
    """BatchNorm with the scale frozen at 1 (the paper's), momentum 0.6, eps 1e-12."""

    def __init__(self, width):
        super().__init__(width, eps=1e-12, momentum=0.6)
        self.weight.requires_grad = False


def _conv(cin, cout):
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        torch.nn.init.dirac_(conv.weight[:min(cin, cout)])
    return conv


class Group(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1, self.norm1 = _conv(cin, cout), Norm(cout)
        self.conv2, self.norm2 = _conv(cout, cout), Norm(cout)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.gelu(self.norm1(x))
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    def __init__(self, classes, widths):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        self.whiten.weight.requires_grad = False
        chans = (24,) + tuple(widths)
        self.groups = nn.Sequential(*[Group(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.fc = nn.Linear(widths[-1], classes, bias=False)

    def forward(self, x):
        x = self.groups(F.gelu(self.whiten(x)))
        x = torch.amax(x, dim=(2, 3))
        return self.fc(x) / 9.0


def whiten_from(images, eps=5e-4):
    """Filters v_j / sqrt(l_j + eps) of the 2x2 patch covariance's eigenpairs, and negatives."""
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1)              # N, C, H-1, W-1, 2, 2
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (vectors.T / torch.sqrt(values.clamp(min=0) + eps)[:, None]).reshape(12, 3, 2, 2)
    return torch.cat([filters, -filters]).float()


def augment(x, epoch, flips0, idx, rng):
    """Alternating flip + reflect-padded random translation of the batch ``x`` (sample ids ``idx``)."""
    flip = flips0[idx] if epoch % 2 == 0 else ~flips0[idx]
    x = torch.where(torch.from_numpy(flip)[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (TRANSLATE,) * 4, mode="reflect")
    dy, dx = rng.integers(0, 2 * TRANSLATE + 1, (2, len(x)))
    out = torch.empty_like(x)
    for shift_y in range(2 * TRANSLATE + 1):
        for shift_x in range(2 * TRANSLATE + 1):
            pick = np.flatnonzero((dy == shift_y) & (dx == shift_x))
            if len(pick):
                out[pick] = padded[pick, :, shift_y:shift_y + 32, shift_x:shift_x + 32]
    return out


def tta_views(x):
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[:, :, :32, :32], padded[:, :, 2:, 2:]]   # shifted down-right / up-left
    return views + [v.flip(3) for v in views]


def autocast(dtype):
    """The forward-pass context of ``--dtype``: CPU autocast to bfloat16, or nothing."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def evaluate(net, images, labels, batch=1000, dtype="float32"):
    net.eval()
    correct = 0
    with torch.no_grad(), autocast(dtype):
        for start in range(0, len(images), batch):
            x = images[start:start + batch]
            probs = sum(F.softmax(net(v).float(), dim=1) for v in tta_views(x)) / 6
            correct += int((probs.argmax(1) == labels[start:start + batch]).sum())
    net.train()
    return correct / len(images)


def make_optimizer(net, batch, base_lr):
    scale = 1024 * (1 + 1 / (1 - MOMENTUM))
    lr, wd = base_lr / scale, WD * batch / scale
    biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    groups = [dict(params=biases, lr=lr * BIAS_SCALE, weight_decay=wd / (lr * BIAS_SCALE)),
              dict(params=others, lr=lr, weight_decay=wd / lr)]
    return torch.optim.SGD(groups, momentum=MOMENTUM, nesterov=True)


def triangle(step, total):
    peak = int(0.23 * total)
    if step < peak:
        return 0.2 + 0.8 * step / peak
    return 1.0 - 0.93 * (step - peak) / max(1, total - peak)


class Lookahead:
    """Every 5 steps: ema <- a * ema + (1 - a) * w, then w <- ema (a = 0.95^5 * progress^3)."""

    def __init__(self, net):
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()
                      if v.dtype.is_floating_point}

    def update(self, net, decay):
        for key, value in net.state_dict().items():
            if key in self.state:
                self.state[key].lerp_(value, 1 - decay)
                value.copy_(self.state[key])


def load(path):
    data = np.load(path)
    mean = torch.tensor(data["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(data["std"], dtype=torch.float32).view(1, 3, 1, 1)
    to_tensor = lambda a: (torch.from_numpy(a).permute(0, 3, 1, 2).float() - mean) / std  # noqa: E731
    return (to_tensor(data["train_x"]), torch.from_numpy(data["train_y"].astype(np.int64)),
            to_tensor(data["test_x"]), torch.from_numpy(data["test_y"].astype(np.int64)))


def train(args, emit):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_x, train_y, test_x, test_y = load(args.data)
    recipe = RECIPES[args.recipe]
    net = AirbenchNet(int(train_y.max()) + 1, recipe["widths"]).to(memory_format=torch.channels_last)
    with torch.no_grad():
        net.whiten.weight.copy_(whiten_from(train_x[:5000]))
    optimizer = make_optimizer(net, args.batch_size, recipe["lr"])
    per_epoch = math.ceil(len(train_x) / args.batch_size)
    total = int((args.epochs or recipe["epochs"]) * per_epoch)
    lookahead, step, epoch = Lookahead(net), 0, 0
    flips0 = rng.random(len(train_x)) < 0.5
    loss_fn = nn.CrossEntropyLoss(label_smoothing=SMOOTHING, reduction="sum")
    while step < total:
        net.whiten.bias.requires_grad = epoch < WHITEN_BIAS_EPOCHS
        tic = time.time()
        order = rng.permutation(len(train_x))
        for start in range(0, len(order), args.batch_size):
            if step >= total:
                break
            idx = order[start:start + args.batch_size]
            x = augment(train_x[idx], epoch, flips0, idx, rng).contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group.setdefault("base_lr", group["lr"])
                group["lr"] = group["base_lr"] * triangle(step, total)
            with autocast(args.dtype):
                logits = net(x)
            loss = loss_fn(logits.float(), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 5 == 0:
                lookahead.update(net, 0.95 ** 5 * (step / total) ** 3)
        if step >= total:
            lookahead.update(net, 1.0)
        train_seconds, tic = time.time() - tic, time.time()
        accuracy = evaluate(net, test_x.contiguous(memory_format=torch.channels_last), test_y,
                            dtype=args.dtype)
        epoch += 1
        emit({"epoch": epoch, "val_error": 1 - accuracy, "time": train_seconds,
              "val_time": time.time() - tic, "num_update": step,
              "train_loss": loss.item() / len(idx)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="npz of train_x/train_y/test_x/test_y/mean/std")
    parser.add_argument("--out", required=True, help="JSON lines, one per epoch")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="airbench94")
    parser.add_argument("--epochs", type=float, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--threads", type=int, default=usable_cores(physical=True))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: forward passes under CPU autocast")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    start = time.time()

    def emit(record):
        record["wall"] = time.time() - start
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        print("epoch %d: test accuracy %.4f, epoch %.1f s, wall %.1f s"
              % (record["epoch"], 1 - record["val_error"], record["time"], record["wall"]), flush=True)

    open(args.out, "w").close()
    train(args, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
