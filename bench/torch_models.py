"""PyTorch twins of the benchmarked CIFAR networks, for bench/throughput.py.

Each model has the same layers, widths and parameter count as the project's symbol
(``symbols.get_symbol``), so images/s compare like for like:

* ResNet v1 (He et al. 2016, Sec. 4.2), depth 6n+2, projection (type B) shortcuts.
* Pre-activation ResNet, bottleneck units, depth 9n+2 (He et al. 2016b), e.g. PreAct-164.
* Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), depth 6n+4, pre-activation basic units.
* DenseNet-BC (Huang et al. 2017), CIFAR layout, growth k, compression 0.5.

Input (N, 3, 32, 32) -> logits (N, num_classes).  Run as a script (by bench/throughput.py,
with an interpreter that has torch) it times training steps and prints one JSON line::

    python bench/torch_models.py --net resnet20 --batch-size 128 [--channels-last] [--bf16]

``--bf16``: PyTorch's CPU automatic mixed precision, ``torch.autocast("cpu",
dtype=torch.bfloat16)`` around forward and loss: convolutions and linear layers in bfloat16,
float32 weights (the optimizer's) and loss, as the project's ``--dtype bfloat16`` trains.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (bench/_common.py: timing loop and JSON protocol)


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicUnit(nn.Module):
    """ResNet v1 basic unit: conv-BN-ReLU-conv-BN + shortcut, then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.project = None
        if stride != 1 or cin != cout:
            self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.project is None else self.project(x)))


class PreActUnit(nn.Module):
    """Pre-activation unit (bottleneck 1x1-3x3-1x1 or basic 3x3-3x3); projection of the
    pre-activated input where the shape changes."""

    def __init__(self, cin, cout, stride, bottleneck):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        if bottleneck:
            inner = cout // 4
            self.convs = nn.ModuleList([nn.Conv2d(cin, inner, 1, bias=False),
                                        conv3x3(inner, inner, stride),
                                        nn.Conv2d(inner, cout, 1, bias=False)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(inner), nn.BatchNorm2d(inner)])
        else:
            self.convs = nn.ModuleList([conv3x3(cin, cout, stride), conv3x3(cout, cout)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(cout)])
        self.project = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                        if stride != 1 or cin != cout else None)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.convs[0](act)
        for bn, conv in zip(self.bns, self.convs[1:]):
            out = conv(F.relu(bn(out)))
        return out + (x if self.project is None else self.project(act))


class CifarResNet(nn.Module):
    """Stem 3x3 conv (16), three stages of ``n`` units (stride 1, 2, 2), pool, FC."""

    def __init__(self, n, widths, preact, bottleneck=False, num_classes=10):
        super().__init__()
        self.preact = preact
        self.stem = conv3x3(3, 16)
        self.stem_bn = None if preact else nn.BatchNorm2d(16)
        units, cin = [], 16
        for stage, cout in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                units.append(PreActUnit(cin, cout, stride, bottleneck) if preact
                             else BasicUnit(cin, cout, stride))
                cin = cout
        self.units = nn.Sequential(*units)
        self.post_bn = nn.BatchNorm2d(cin) if preact else None
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stem(x)
        if self.stem_bn is not None:
            x = F.relu(self.stem_bn(x))
        x = self.units(x)
        if self.post_bn is not None:
            x = F.relu(self.post_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k) over the concatenation of earlier features."""

    def __init__(self, cin, growth):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(4 * growth), conv3x3(4 * growth, growth)

    def forward(self, features):
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


class DenseNetBC(nn.Module):
    """CIFAR DenseNet-BC: stem conv (2k), 3 dense blocks of (L-4)/6 layers, transitions
    BN-ReLU-conv1x1 (half the channels) + 2x2 average pool, BN-ReLU, pool, FC."""

    def __init__(self, depth=100, growth=12, num_classes=10):
        super().__init__()
        per_block = (depth - 4) // 6
        channels = 2 * growth
        self.stem = conv3x3(3, channels)
        self.blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
        for block in range(3):
            layers = nn.ModuleList()
            for i in range(per_block):
                layers.append(DenseLayer(channels + i * growth, growth))
            self.blocks.append(layers)
            channels += per_block * growth
            if block < 2:
                out = channels // 2
                self.transitions.append(nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(),
                                                      nn.Conv2d(channels, out, 1, bias=False),
                                                      nn.AvgPool2d(2)))
                channels = out
        self.final_bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for block, layers in enumerate(self.blocks):
            features = [x]
            for layer in layers:
                features.append(layer(features))
            x = torch.cat(features, 1)
            if block < len(self.transitions):
                x = self.transitions[block](x)
        x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


#: bench network name -> constructor of the PyTorch twin.
MODELS = {
    "resnet20": lambda: CifarResNet(3, (16, 32, 64), preact=False),
    "resnet56": lambda: CifarResNet(9, (16, 32, 64), preact=False),
    "preact164": lambda: CifarResNet(18, (64, 128, 256), preact=True, bottleneck=True),
    "wrn16_4": lambda: CifarResNet(2, (64, 128, 256), preact=True, bottleneck=False),
    "densenet100": lambda: DenseNetBC(100, 12),
}


def build(net):
    if net not in MODELS:
        raise ValueError("no PyTorch model %r; choose one of %s" % (net, ", ".join(MODELS)))
    return MODELS[net]()


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def measure(net, batch_size, channels_last, batches=None, seconds=_common.TARGET_SECONDS,
            bf16=False):
    """Time SGD training steps on synthetic data; ``_common.Timing`` as a dict."""
    torch.manual_seed(0)
    model = build(net)
    params = count_params(model)
    data = torch.rand(batch_size, 3, 32, 32)
    label = torch.randint(0, 10, (batch_size,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        data = data.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(data), label)
        loss.backward()
        opt.step()
        return loss

    timing = _common.time_steps(step, lambda loss: float(loss.detach()), batch_size, batches, seconds)
    timing["params"] = params
    timing["threads"] = torch.get_num_threads()
    timing["version"] = torch.__version__
    timing["dtype"] = "bfloat16 autocast" if bf16 else "float32"
    return timing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", required=True, choices=sorted(MODELS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU AMP)")
    parser.add_argument("--batches", type=int)
    parser.add_argument("--seconds", type=float, default=_common.TARGET_SECONDS)
    args = parser.parse_args(argv)
    print(_common.RESULT_TAG + json.dumps(measure(args.net, args.batch_size, args.channels_last,
                                                  args.batches, args.seconds, args.bf16)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
