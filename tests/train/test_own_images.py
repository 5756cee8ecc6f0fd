"""A user's own photos end to end: a tree of mixed sizes and kinds (CMYK and greyscale JPEG,
PNG with alpha) packed with data/im2rec.py --resize, an ImageNet-layout ResNet-18 at 64 px
fine-tuned from a checkpoint for an epoch, scored with inference/score.py, and asked to
--predict a photo of yet another size."""

import json
import os

import numpy as np
from PIL import Image

from tests.train.cli_helpers import ROOT, run_cli

COLOURS = {"berry": (200, 30, 60), "leaf": (40, 180, 50), "sky": (50, 90, 210)}
KINDS = ("RGB", "CMYK", "L", "RGBA")
SHAPE = "3,64,64"
NETWORK = ["--network", "resnet", "--num-layers", "18", "--style", "imagenet", "--image-shape", SHAPE]


def photo(size, colour, kind, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-40, 41, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8)).convert(kind)


def make_photos(folder):
    """train/<class>/ (4 each) and test/<class>/ (2 each), 48-160 px, every kind of file."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for c, (cls, colour) in enumerate(COLOURS.items()):
            os.makedirs(os.path.join(folder, split, cls))
            for i in range(count):
                kind = KINDS[(i + c) % len(KINDS)]
                size = tuple(int(v) for v in rng.integers(48, 161, 2))
                ext = ".png" if kind == "RGBA" else ".jpg"
                photo(size, colour, kind, i).save(os.path.join(folder, split, cls, "%d%s" % (i, ext)))


def pretrained_checkpoint(prefix):
    """A checkpoint of the same network for 5 other classes (what --pretrained starts from)."""
    import mxnet as mx

    from mxcnn import symbols
    from mxcnn.inference import checkpoint
    from mxcnn.train import engines

    sym = symbols.get_symbol(
        "resnet", num_classes=5, num_layers=18, image_shape=(3, 64, 64), style="imagenet"
    )
    mx.random.seed(1)
    arg, aux = engines.initial_params(sym, (1, 3, 64, 64))
    checkpoint.save_checkpoint(prefix, 3, sym, arg, aux, state={"network": "resnet"})
    return arg


def test_own_photos_packed_finetuned_scored_and_predicted(tmp_path):
    tree, data = str(tmp_path / "photos"), str(tmp_path / "data")
    make_photos(tree)
    packed = run_cli(
        ["--source", tree, "--resize", "72", "--output-dir", data, "--name", "photos", "--quiet"],
        script=os.path.join(ROOT, "data", "im2rec.py"),
    )
    assert packed.returncode == 0, packed.stderr
    stats = json.load(open(os.path.join(data, "photos_stats.json")))
    assert stats["num_train"] == 12 and stats["num_val"] == 6 and stats["image_shape"] is None
    base = str(tmp_path / "base" / "m")
    before = pretrained_checkpoint(base)
    prefix = str(tmp_path / "ft" / "m")
    train = run_cli(
        [
            "--data-train",
            os.path.join(data, "photos_train.rec"),
            "--data-val",
            os.path.join(data, "photos_val.rec"),
            *NETWORK,
            "--batch-size",
            "6",
            "--num-epochs",
            "1",
            "--lr",
            "0.01",
            "--pretrained",
            base,
            "--freeze",
            "stage1",
            "--model-prefix",
            prefix,
            "--no-plot",
        ]
    )
    assert train.returncode == 0, train.stderr
    assert "augmentation: imagenet" in train.stderr
    assert "fc1_weight (5, 512) -> (3, 512)" in train.stderr
    import mxnet as mx

    after = mx.nd.load(prefix + "-0001.params")
    assert np.array_equal(
        after["arg:stage1_unit1_a_conv_weight"].asnumpy(), before["stage1_unit1_a_conv_weight"].asnumpy()
    )
    record = json.load(open(prefix + "-0001.json"))["preprocess"]
    assert record["augment"] == "imagenet" and record["eval_resize"] == 74
    scored = run_cli(
        [
            "--model-prefix",
            prefix,
            "--load-epoch",
            "1",
            "--data-val",
            os.path.join(data, "photos_val.rec"),
            "--json",
        ],
        script=os.path.join(ROOT, "inference", "score.py"),
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["samples"] == 6
    other = str(tmp_path / "wide.jpg")
    photo((210, 95), COLOURS["sky"], "CMYK", 7).save(other)
    predicted = run_cli(
        ["--model-prefix", prefix, "--load-epoch", "1", "--predict", other, "--top-k", "3", "--json"],
        script=os.path.join(ROOT, "inference", "score.py"),
    )
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)[other]
    assert sorted(a["name"] for a in answer) == sorted(COLOURS)
    assert abs(sum(a["probability"] for a in answer) - 1) < 1e-3
