"""What the trainer's command-line tests share: tiny class-coloured records and the CLI runner."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "train", "train_cifar.py")
PLOT = os.path.join(ROOT, "train", "plot_curves.py")
SIDE = 16
CLASSES = 4


def make_records(folder, name="toy", n_train=96, n_val=32, classes=CLASSES):
    """Tiny class-coloured PNG records + stats in data/prepare_cifar.py's layout."""
    import mxnet as mx
    rs = np.random.RandomState(0)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        rec = mx.recordio.MXIndexedRecordIO(os.path.join(folder, "%s_%s.idx" % (name, split)),
                                            os.path.join(folder, "%s_%s.rec" % (name, split)), "w")
        for i in range(n):
            label = i % classes
            img = (rs.rand(SIDE, SIDE, 3) * 60).astype(np.uint8)
            img[..., label % 3] += 60 * (1 + label // 3)
            header = mx.recordio.IRHeader(0, float(label), i, 0)
            rec.write_idx(i, mx.recordio.pack_img(header, img, img_fmt=".png"))
        rec.close()
    stats = {"num_classes": classes, "classes": ["c%d" % i for i in range(classes)],
             "num_train": n_train, "num_val": n_val, "image_shape": [3, SIDE, SIDE],
             "mean": [90.0, 90.0, 90.0], "std": [60.0, 60.0, 60.0]}
    with open(os.path.join(folder, "%s_stats.json" % name), "w") as handle:
        json.dump(stats, handle)
    return os.path.join(folder, "%s_train.rec" % name), os.path.join(folder, "%s_val.rec" % name)


def base_args(records, prefix, *extra):
    train, val = records
    return ["--data-train", train, "--data-val", val, "--image-shape", "3,%d,%d" % (SIDE, SIDE),
            "--network", "resnet", "--num-layers", "8", "--batch-size", "16", "--lr", "0.05",
            "--lr-step-epochs", "2", "--model-prefix", prefix, "--disp-batches", "2",
            "--no-plot"] + list(extra)


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)


def run_cli(args, script=SCRIPT, timeout=240, **extra_env):
    return subprocess.run([sys.executable, script] + list(args), capture_output=True, text=True,
                          env=dict(env(), **extra_env), timeout=timeout, cwd=ROOT)


def load(prefix, epoch):
    import mxnet as mx
    return mx.nd.load("%s-%04d.params" % (prefix, epoch))
