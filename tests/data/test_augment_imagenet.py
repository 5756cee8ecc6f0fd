"""ImageNet-style augmentation on ImageRecordIter (data/epoch_iters.imagenet_options), measured
on an image whose pixels encode their coordinates (red = x, green = y): the training crops'
area, aspect ratio, position and flips against torchvision's RandomResizedCrop, and the
evaluation's resize to size/0.875 + centre crop, which --predict repeats."""

import math
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

from mxcnn.data.epoch_iters import NativeRecIter, eval_resize
from mxcnn.data.iterators import get_rec_iters
from mxcnn.inference.predict import preprocess_image

WIDTH, HEIGHT = 256, 192  # every coordinate fits in a uint8 channel
CROP = 32
PLAIN = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
#: torchvision.transforms.RandomResizedCrop's defaults
SCALE, RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)


def coordinate_image():
    """(HEIGHT, WIDTH, 3) RGB uint8: red = x, green = y, blue = 100."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, :, 0] = np.arange(WIDTH)[None, :]
    image[:, :, 1] = np.arange(HEIGHT)[:, None]
    image[:, :, 2] = 100
    return image


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """``(rec path, png path)``: 600 PNG records of the coordinate image, and the image."""
    folder = str(tmp_path_factory.mktemp("coords"))
    rec = os.path.join(folder, "coords.rec")
    writer = mx.recordio.MXIndexedRecordIO(rec[:-4] + ".idx", rec, "w")
    bgr = coordinate_image()[:, :, ::-1]
    for i in range(600):
        writer.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, 0.0, i, 0), bgr, img_fmt=".png"))
    writer.close()
    png = os.path.join(folder, "coords.png")
    cv2.imwrite(png, bgr)
    return rec, png


def _line(values, scale_positions=(8, 23)):
    """``(start, size, reversed)`` of the source span a resized output line shows: bilinear
    resizing maps output pixel j to source coordinate start + (j + 0.5) * size / n - 0.5."""
    a, b = (float(values[j]) for j in scale_positions)
    step = (b - a) / (scale_positions[1] - scale_positions[0])
    first = min(a, b) if step >= 0 else b
    start = first - (scale_positions[0] + 0.5) * abs(step) + 0.5
    return start, abs(step) * len(values), step < 0


def measured_crops(rec):
    """``[(x0, y0, w, h, flipped)]`` of every training crop of one epoch."""
    train = NativeRecIter(
        rec, 100, (3, CROP, CROP), augment=True, augmentation="imagenet", shuffle=True, seed=3
    )
    crops = []
    for batch in train:
        data = batch.data[0].asnumpy()
        for sample in data[: batch.data[0].shape[0] - batch.pad]:
            x0, w, flipped = _line(sample[0].mean(axis=0))
            y0, h, upside_down = _line(sample[1].mean(axis=1))
            assert not upside_down
            crops.append((x0, y0, w, h, flipped))
    return np.array(crops)


def torchvision_crops(count, seed=0):
    """``[(area fraction, aspect)]`` drawn as torchvision's RandomResizedCrop.get_params does
    (scale (0.08, 1), ratio (3/4, 4/3), log-uniform ratio, 10 attempts, then a centre crop)."""
    rng = np.random.default_rng(seed)
    area, out = WIDTH * HEIGHT, []
    for _ in range(count):
        for _ in range(10):
            target = area * rng.uniform(*SCALE)
            ratio = math.exp(rng.uniform(*np.log(RATIO)))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= WIDTH and 0 < h <= HEIGHT:
                break
        else:
            w, h = WIDTH, round(WIDTH / RATIO[1])
        out.append((w * h / area, w / h))
    return np.array(out)


def test_training_crops_follow_random_resized_crop(records):
    crops = measured_crops(records[0])
    assert len(crops) == 600
    x0, y0, w, h, flipped = crops.T
    area, aspect = w * h / (WIDTH * HEIGHT), w / h
    reference = torchvision_crops(20000)
    # inside the image, area and aspect within the ranges (1-2 px of rounding)
    assert x0.min() > -2 and (x0 + w).max() < WIDTH + 2 and y0.min() > -2
    assert (y0 + h).max() < HEIGHT + 2
    assert area.min() > SCALE[0] * 0.85 and area.max() < 1.03
    assert aspect.min() > RATIO[0] / 1.08 and aspect.max() < RATIO[1] * 1.08
    # the distributions: torchvision's, within the sampling error of 600 crops
    assert abs(area.mean() - reference[:, 0].mean()) < 0.04
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(area, q) - np.quantile(reference[:, 0], q)) < 0.06, q
    assert abs(np.log(aspect).mean()) < 0.03
    assert abs(np.log(aspect).std() - np.log(reference[:, 1]).std()) < 0.03
    assert 0.38 < (aspect > 1).mean() < 0.62
    # anywhere in the image, and mirrored half of the time (ImageRecordIter's flips vary more
    # than independent coin flips would: 0.41-0.54 over seeds 0-5 of 600 crops)
    assert x0.min() < 3 and (x0 + w).max() > WIDTH - 3 and y0.min() < 3
    assert abs((x0 + w / 2).mean() - WIDTH / 2) < 12 and abs((y0 + h / 2).mean() - HEIGHT / 2) < 10
    assert 0.38 < flipped.mean() < 0.62


def expected_eval_line(count, short, side):
    """Source coordinates of the centre crop's pixels (count of them) after the shorter side
    ``short`` of the source line ``side`` long was resized to ``eval_resize``."""
    resized = eval_resize((3, count, count)) * side // short  # MXNet's integer sizes
    offset = (resized - count) // 2
    return (offset + np.arange(count) + 0.5) * side / resized - 0.5


def test_evaluation_resizes_then_centre_crops_as_predict_does(records):
    rec, png = records
    assert eval_resize((3, 224, 224)) == 256 and eval_resize((3, 64, 64)) == 74
    _, val = get_rec_iters(None, rec, 2, (3, 64, 64), stats=PLAIN, augmentation="imagenet")
    sample = next(iter(val)).data[0].asnumpy()[0]
    want_x = expected_eval_line(64, HEIGHT, WIDTH)
    want_y = expected_eval_line(64, HEIGHT, HEIGHT)
    inner = slice(4, 60)  # away from the clamped borders
    assert np.abs(sample[0].mean(axis=0)[inner] - want_x[inner]).max() < 1.0
    assert np.abs(sample[1].mean(axis=1)[inner] - want_y[inner]).max() < 1.0
    stats = dict(PLAIN, eval_resize=eval_resize((3, 64, 64)))
    predicted = preprocess_image(png, (3, 64, 64), stats)
    assert np.abs(predicted[0].mean(axis=0)[inner] - want_x[inner]).max() < 2.5
    assert np.abs(predicted[1].mean(axis=1)[inner] - want_y[inner]).max() < 2.5
    with pytest.raises(Exception, match="backend='native'"):
        get_rec_iters(None, rec, 2, (3, 64, 64), stats=PLAIN, augmentation="imagenet", backend="memory")
