"""Conversion of every source kind to RecordIO that stock MXNet reads, pixel-exact."""
import json
import os

import numpy as np
import pytest

from mxcnn.data.errors import DataError
from mxcnn.data.prepare_cifar import main, prepare
from mxcnn.data.recfile import dataset_names


def check_outputs(fx, out_dir, name, fixture, dataset):
    stats = json.load(open(os.path.join(out_dir, name + "_stats.json")))
    assert stats["classes"] == list(fixture.classes)
    assert stats["num_classes"] == len(fixture.classes)
    assert stats["num_train"] == len(fixture.train_labels)
    assert stats["num_val"] == len(fixture.val_labels)
    assert stats["image_shape"] == [3] + list(fixture.train_images.shape[1:3])
    assert stats["dataset"] == dataset and stats["format"] == "png"
    np.testing.assert_allclose(stats["mean"], fixture.train_images.reshape(-1, 3).mean(0), atol=1e-3)
    np.testing.assert_allclose(stats["std"], fixture.train_images.reshape(-1, 3).std(0), atol=1e-3)
    for split, images, labels in (("train", fixture.train_images, fixture.train_labels),
                                  ("val", fixture.val_images, fixture.val_labels)):
        got_images, got_labels, ids = fx.read_rec(os.path.join(out_dir, "%s_%s.rec" % (name, split)))
        np.testing.assert_array_equal(got_images, images)  # lossless, RGB after BGR storage
        np.testing.assert_array_equal(got_labels, labels)
        assert ids == list(range(len(labels)))
        lines = open(os.path.join(out_dir, "%s_%s.lst" % (name, split))).read().splitlines()
        assert len(lines) == len(labels)
        index, label, path = lines[-1].split("\t")
        assert int(index) == len(labels) - 1 and float(label) == labels[-1] and path


@pytest.mark.parametrize("kind", ["python-archive", "python-folder", "binary-archive"])
def test_cifar10_layouts_round_trip_exactly(fx, tmp_path, out_dir, kind):
    if kind == "binary-archive":
        fixture = fx.make_cifar10_binary(str(tmp_path))
    else:
        fixture = fx.make_cifar10_python(str(tmp_path), archive=kind == "python-archive")
    prepare("cifar10", source=fixture.path, output_dir=out_dir, quiet=True, log=lambda m: None)
    check_outputs(fx, out_dir, "cifar10", fixture, "cifar10")


@pytest.mark.parametrize("kind", ["python", "binary"])
@pytest.mark.parametrize("label_mode", ["fine", "coarse"])
def test_cifar100_layouts_and_label_modes(fx, tmp_path, out_dir, kind, label_mode):
    fixture = fx.make_cifar100(str(tmp_path), kind, label_mode)
    assert main(["--dataset", "cifar100", "--source", fixture.path, "--output-dir", out_dir,
                 "--label-mode", label_mode, "--name", "c100", "--quiet"]) == 0
    check_outputs(fx, out_dir, "c100", fixture, "cifar100")


@pytest.mark.parametrize("packed", [False, True])
def test_class_folder_tree_folder_and_zip(fx, tmp_path, out_dir, packed):
    fixture = fx.make_tree(str(tmp_path / "tree"), size=(24, 20))
    source = fx.zip_tree(fixture.path, str(tmp_path / "tree.zip")) if packed else fixture.path
    prepare("cifar10", source=source, output_dir=out_dir, name="pets", quiet=True,
            log=lambda m: None)
    check_outputs(fx, out_dir, "pets", fixture, "cifar10")
    first = open(os.path.join(out_dir, "pets_train.lst")).readline().rstrip("\n").split("\t")
    assert first == ["0", "0.000000", "train/cat/000.png"]


def test_image_record_iter_reads_the_output_in_rgb(fx, tmp_path, out_dir):
    import mxnet as mx
    fixture = fx.make_cifar10_python(str(tmp_path))
    prepare("cifar10", source=fixture.path, output_dir=out_dir, quiet=True, log=lambda m: None)
    it = mx.io.ImageRecordIter(path_imgrec=os.path.join(out_dir, "cifar10_val.rec"),
                               data_shape=(3, 32, 32), batch_size=len(fixture.val_labels))
    batch = it.next()
    np.testing.assert_array_equal(batch.data[0].asnumpy(),
                                  fixture.val_images.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(batch.label[0].asnumpy(), fixture.val_labels)


def test_rerun_is_a_no_op_unless_forced_or_changed(fx, tmp_path, out_dir):
    fixture = fx.make_cifar10_binary(str(tmp_path))
    messages = []
    args = dict(source=fixture.path, output_dir=out_dir, quiet=True, log=messages.append)
    assert prepare("cifar10", **args) is not None
    rec = os.path.join(out_dir, "cifar10_train.rec")
    before = os.stat(rec).st_mtime_ns
    assert prepare("cifar10", **args) is None
    assert "up to date" in messages[-1] and os.stat(rec).st_mtime_ns == before
    assert prepare("cifar10", force=True, **args) is not None
    assert os.stat(rec).st_mtime_ns != before
    with pytest.raises(DataError, match="already holds .* pass --force"):  # another conversion
        prepare("cifar10", img_format="jpeg", **args)
    assert prepare("cifar10", img_format="jpeg", force=True, **args)["format"] == "jpeg"


@pytest.mark.parametrize("mask, file_mode, dir_mode",
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_honour_the_umask(fx, tmp_path, out_dir, mask, file_mode, dir_mode):
    import stat
    fixture = fx.make_cifar10_binary(str(tmp_path))
    old = os.umask(mask)
    try:
        prepare("cifar10", source=fixture.path, output_dir=out_dir, quiet=True, log=lambda m: None)
    finally:
        os.umask(old)
    store = os.path.join(out_dir, ".cifar10.set")
    for member in dataset_names("cifar10"):  # .rec/.idx by MXNet, .lst and stats by Python
        assert stat.S_IMODE(os.stat(os.path.join(out_dir, member)).st_mode) == file_mode, member
    for folder in (store, os.path.realpath(os.path.join(store, "current"))):
        assert stat.S_IMODE(os.stat(folder).st_mode) == dir_mode


def test_jpeg_format_is_smaller_and_close(fx, tmp_path, out_dir):
    fixture = fx.make_tree(str(tmp_path / "tree"), seed=1)
    # smooth images so JPEG is meaningful
    import cv2
    for root, _, names in os.walk(fixture.path):
        for name in names:
            path = os.path.join(root, name)
            cv2.imwrite(path, cv2.GaussianBlur(cv2.imread(path), (9, 9), 3))
    prepare("cifar10", source=fixture.path, output_dir=out_dir, img_format="jpeg", quality=90,
            quiet=True, log=lambda m: None)
    blurred = np.stack([cv2.imread(os.path.join(fixture.path, "test", cls, "%03d.png" % j))[:, :, ::-1]
                        for cls in fixture.classes for j in range(3)])
    images, _, _ = fx.read_rec(os.path.join(out_dir, "cifar10_val.rec"))
    error = np.abs(images.astype(int) - blurred).mean()
    assert 0 < error < 4
    png_dir = os.path.join(out_dir, "png")
    prepare("cifar10", source=fixture.path, output_dir=png_dir, quiet=True, log=lambda m: None)
    assert os.path.getsize(os.path.join(out_dir, "cifar10_val.rec")) < \
        os.path.getsize(os.path.join(png_dir, "cifar10_val.rec"))
