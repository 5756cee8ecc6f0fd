"""Conversion of the real CIFAR-10 JPEG subset (10k train / 5k test) and one pass over it."""
import json
import os

import numpy as np
import pytest

from mxcnn.data.iterators import get_rec_iters
from mxcnn.data.prepare_cifar import main

SUBSET = "cifar10-jpeg-subset.tar.gz"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the shared real data sits beside the checkout (CI copies it there too)
CANDIDATES = [os.path.join(os.path.dirname(REPO), "shared", "data", SUBSET)]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


@pytest.mark.slow
def test_real_cifar10_subset_converts_with_right_counts_classes_and_labels(tmp_path):
    source = next((p for p in CANDIDATES if os.path.isfile(p)), None)
    if source is None:
        pytest.skip("real data %s not found in %s" % (SUBSET, " or ".join(CANDIDATES)))
    out = str(tmp_path)
    assert main(["--source", source, "--output-dir", out, "--quiet"]) == 0
    stats = json.load(open(os.path.join(out, "cifar10_stats.json")))
    assert (stats["num_train"], stats["num_val"]) == (10000, 5000)
    assert stats["classes"] == CLASSES and stats["image_shape"] == [3, 32, 32]
    assert 100 < min(stats["mean"]) < max(stats["mean"]) < 140  # CIFAR-10: ~(125, 123, 114)
    for split, per_class, folder in (("train", 1000, "train"), ("val", 500, "test")):
        lines = [l.split("\t") for l in open(os.path.join(out, "cifar10_%s.lst" % split))]
        assert len(lines) == 10 * per_class
        for _index, label, path in lines:  # the label is the class folder's sorted position
            top, cls, _ = path.strip().split("/")
            assert top == folder and CLASSES[int(float(label))] == cls
    train, val = get_rec_iters(os.path.join(out, "cifar10_train.rec"),
                               os.path.join(out, "cifar10_val.rec"), 500, augment=False,
                               shuffle=False)
    counts = np.zeros(10, int)
    for batch in val:
        counts += np.bincount(batch.label[0].asnumpy().astype(int), minlength=10)
    assert counts.tolist() == [500] * 10
    first = next(iter(train)).data[0].asnumpy()
    assert abs(float(first.mean())) < 0.5 and 0.6 < float(first.std()) < 1.4  # normalised
