"""data/im2rec.py: images of any size and kind packed with --resize / --center-crop, from a
tree, an archive or .lst files; every image once; stats of the stored images; bad input."""

import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from mxcnn.data import im2rec
from mxcnn.data.errors import DataError
from tests.data.conftest import read_records, snapshot

#: (width, height) of the images of each class folder, and how each is saved
KINDS = ("rgb.jpg", "cmyk.jpg", "grey.jpg", "alpha.png", "grey16.png", "palette.gif")


def _image(kind, size, colour):
    """A PIL image of ``size`` whose visible colour is ``colour`` (RGB) plus noise."""
    rng = np.random.default_rng(sum(size))
    rgb = np.clip(np.array(colour) + rng.integers(-20, 21, size[::-1] + (3,)), 0, 255)
    image = Image.fromarray(rgb.astype(np.uint8))
    if kind == "cmyk.jpg":
        return image.convert("CMYK")
    if kind == "grey.jpg":
        return image.convert("L")
    if kind == "alpha.png":
        return image.convert("RGBA")
    if kind == "grey16.png":
        return Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    return image.convert("P") if kind == "palette.gif" else image


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_mixed_tree(folder):
    """train/ and test/ folders of 3 colour classes; every kind of file, sizes 20-90 px."""
    names = []
    rng = np.random.default_rng(1)
    for split, count in (("train", 6), ("test", 3)):
        for cls, colour in COLOURS.items():
            os.makedirs(os.path.join(folder, split, cls), exist_ok=True)
            for i in range(count):
                kind = KINDS[(i + len(names)) % len(KINDS)]
                size = (int(rng.integers(20, 91)), int(rng.integers(20, 91)))
                name = "%s/%s/%d-%s" % (split, cls, i, kind)
                _image(kind, size, colour).save(os.path.join(folder, name))
                names.append((name, size))
    return names


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("mixed"))
    return folder, make_mixed_tree(folder)


def _stored(out, name, split):
    """(RGB images of any size, labels, ids) of a split, read with stock MXNet."""
    return read_records(os.path.join(out, "%s_%s.rec" % (name, split)))


def test_resize_keeps_aspect_colour_and_every_image_once(tree, tmp_path):
    folder, names = tree
    out = str(tmp_path / "out")
    stats = im2rec.pack(
        source=folder,
        output_dir=out,
        name="mixed",
        resize=24,
        img_format="png",
        workers=2,
        quiet=True,
        log=lambda *a: None,
    )
    assert stats["classes"] == sorted(COLOURS) and stats["image_shape"] is None
    sizes = dict(names)
    pixels, total, squares = 0, np.zeros(3), np.zeros(3)
    for split in ("train", "val"):
        images, labels, _ = _stored(out, "mixed", split)  # RGB: BGR records read back
        with open(os.path.join(out, "mixed_%s.lst" % split)) as handle:
            listed = [line.rstrip("\n").split("\t")[2] for line in handle]
        prefix = "train/" if split == "train" else "test/"
        assert sorted(listed) == sorted(n for n in sizes if n.startswith(prefix))
        for image, label, name in zip(images, labels, listed):
            width, height = sizes[name]
            assert min(image.shape[:2]) == 24, name
            assert abs(image.shape[1] / image.shape[0] - width / height) < 0.1 * width / height
            colour = np.array(COLOURS[sorted(COLOURS)[int(label)]])
            if "grey" not in name:
                assert np.abs(image.reshape(-1, 3).mean(0) - colour).max() < 25, name
            if split == "train":
                flat = image.reshape(-1, 3).astype(np.float64)
                pixels, total, squares = pixels + len(flat), total + flat.sum(0), squares + (flat**2).sum(0)
    mean = total / pixels
    assert np.allclose(stats["mean"], mean, atol=0.01)
    assert np.allclose(stats["std"], np.sqrt(squares / pixels - mean**2), atol=0.01)


def test_center_crop_lst_input_and_workers_agree(tree, tmp_path):
    folder, names = tree
    lists = {}
    for split, keys in (("train", 100), ("val", 500)):
        path = str(tmp_path / ("%s.lst" % split))
        prefix = "train/" if split == "train" else "test/"
        chosen = [n for n, _ in names if n.startswith(prefix)]
        with open(path, "w") as handle:
            for i, name in enumerate(chosen):
                label = sorted(COLOURS).index(name.split("/")[1])
                handle.write("%d\t%f\t%s\n" % (keys + 3 * i, label, name))
        lists[split] = path
    outs = []
    for workers in (1, 2):
        out = str(tmp_path / ("w%d" % workers))
        stats = im2rec.pack(
            train_lst=lists["train"],
            val_lst=lists["val"],
            root=folder,
            output_dir=out,
            name="sq",
            resize=16,
            centre_crop=True,
            workers=workers,
            quiet=True,
            log=lambda *a: None,
        )
        assert stats["image_shape"] == [3, 16, 16] and stats["classes"] == sorted(COLOURS)
        images, _, ids = _stored(out, "sq", "train")
        assert {i.shape for i in images} == {(16, 16, 3)} and ids == [100 + 3 * i for i in range(len(ids))]
        outs.append({n: b for n, b in snapshot(out).items() if not n.startswith(".")})
    assert outs[0] == outs[1]  # the same files whatever the number of processes


def test_cli_refusals_are_one_line_and_leave_the_set(tree, tmp_path, capsys):
    folder, _ = tree
    out = str(tmp_path / "out")
    assert (
        im2rec.main(["--source", folder, "--output-dir", out, "--name", "m", "--resize", "20", "--quiet"])
        == 0
    )
    before = snapshot(out)
    assert (
        im2rec.main(["--source", folder, "--output-dir", out, "--name", "m", "--resize", "20", "--quiet"])
        == 0
    )  # up to date
    assert "up to date" in capsys.readouterr().out
    bad = str(tmp_path / "bad")
    os.makedirs(os.path.join(bad, "train", "a"))
    os.makedirs(os.path.join(bad, "train", "b"))
    for cls in ("a", "b"):
        os.makedirs(os.path.join(bad, "test", cls))
        _image("rgb.jpg", (30, 30), (1, 2, 3)).save(os.path.join(bad, "train", cls, "0.jpg"))
        _image("rgb.jpg", (30, 30), (1, 2, 3)).save(os.path.join(bad, "test", cls, "0.jpg"))
    blob = open(os.path.join(bad, "train", "b", "0.jpg"), "rb").read()
    with open(os.path.join(bad, "train", "b", "cut.jpg"), "wb") as handle:
        handle.write(blob[: len(blob) // 2])
    for argv, words in (
        (["--source", bad, "--resize", "20", "--force"], ["cut.jpg", "truncated", "--skip-bad"]),
        (["--source", folder, "--resize", "10", "--force", "--quality", "0"], ["--quality"]),
        (["--source", folder, "--resize", "10"], ["already holds", "--force"]),
        (["--train-lst", str(tmp_path / "none.lst"), "--val-lst", "x.lst"], ["none.lst"]),
    ):
        code = im2rec.main(argv + ["--output-dir", out, "--name", "m", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert all(w in err[0] for w in words), err
    assert snapshot(out) == before
    stats = im2rec.pack(
        source=bad,
        output_dir=str(tmp_path / "skip"),
        resize=20,
        skip_bad=True,
        quiet=True,
        log=lambda *a: None,
    )
    assert stats["num_train"] == 2 and stats["skipped"][0]["file"] == "train/b/cut.jpg"


def test_unsafe_archive_members_and_lst_paths_are_refused(tmp_path):
    archive = str(tmp_path / "evil.tar")
    with tarfile.open(archive, "w") as tar:
        for name in ("train/a/0.png", "test/a/0.png", "../escape.png"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="escape.png.*outside"):
        im2rec.pack(source=archive, output_dir=str(tmp_path / "o"), quiet=True)
    lst = str(tmp_path / "t.lst")
    for line, words in (
        ("0\t0\t../../etc/passwd\n", "outside the image root"),
        ("0\t0.5\ta.jpg\n", "whole numbers"),
        ("0\t1\n", "index<TAB>label"),
        ("0\t0\ta.jpg\n0\t1\tb.jpg\n", "repeats line 1"),
    ):
        with open(lst, "w") as handle:
            handle.write(line)
        with pytest.raises(DataError, match=words):
            im2rec.pack(train_lst=lst, val_lst=lst, output_dir=str(tmp_path / "o"), quiet=True)
    assert not os.path.exists(str(tmp_path / "escape.png"))


def test_large_jpegs_decode_at_a_reduced_scale_only_down_to_the_size_wanted():
    from mxcnn.data.images import decode_image
    from mxcnn.data.packing import resize_shorter

    rgb = _image("rgb.jpg", (400, 300), (200, 100, 50))
    blob = io.BytesIO()
    rgb.save(blob, "JPEG", quality=95)
    full = decode_image(blob.getvalue(), "x.jpg")
    for min_side, shape in ((64, (75, 100)), (100, (150, 200)), (151, (300, 400)), (None, (300, 400))):
        assert decode_image(blob.getvalue(), "x.jpg", min_side=min_side).shape[:2] == shape, min_side
    small = resize_shorter(decode_image(blob.getvalue(), "x.jpg", min_side=64), 64)
    assert small.shape == (64, 85, 3)
    assert np.abs(small.mean((0, 1)) - resize_shorter(full, 64).mean((0, 1))).max() < 2
