"""data.images, the one reader of users' image files, and the converter on hostile images:
a decompression bomb is refused from its header with bounded memory, a truncated JPEG/PNG is
refused (or left out and listed with --skip-bad), and every colour mode comes back as RGB."""
import io
import json
import os

import numpy as np
import pytest

from mxcnn.data import images
from mxcnn.data.errors import DataError
from mxcnn.data.prepare_cifar import main, prepare
from tests.hostile_files import bomb_png, run_with_peak_memory

BOMB_SIDE = 20000  # 400 M pixels: 1.2 GB as decoded RGB


def _encode(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _rgb(seed=0, shape=(32, 32)):
    return np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)


def _tree(folder, ext=".jpg", per_class=(3, 2)):
    """train/{a,b}/ + test/{a,b}/ of 32x32 images; {relative path: RGB array}."""
    from PIL import Image
    out = {}
    for split, count in zip(("train", "test"), per_class):
        for cls in "ab":
            os.makedirs(os.path.join(folder, split, cls))
            for j in range(count):
                rel = "%s/%s/%d%s" % (split, cls, j, ext)
                out[rel] = _rgb(len(out))
                Image.fromarray(out[rel]).save(os.path.join(folder, rel), quality=95)
    return out


def _cut(path, fraction):
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[:int(len(blob) * fraction)])


# ------------------------------------------------------------------ decompression bombs

def test_bomb_is_refused_from_its_header_with_bounded_memory(tmp_path):
    source = tmp_path / "tree"
    _tree(str(source))
    bomb = source / "train" / "b" / "bomb.png"
    bomb.write_bytes(bomb_png())
    assert bomb.stat().st_size < 200_000
    status, message, peak = run_with_peak_memory(
        "mxcnn.data.prepare_cifar",
        ["--quiet", "--source", str(source), "--output-dir", str(tmp_path / "out")], tmp_path)
    decoded = 3 * BOMB_SIDE ** 2
    assert peak < decoded / 4, "peak %.0f MB for a %.0f MB image" % (peak / 2**20, decoded / 2**20)
    assert status == 2, message
    assert message.count("\n") == 1 and "Traceback" not in message
    assert str(bomb) in message and "20000x20000" in message and "--max-image-pixels" in message


def test_pixel_limit_checks_the_header_and_is_a_flag(tmp_path, capsys):
    blob = bomb_png(side=2000)  # small enough to decode here
    with pytest.raises(DataError, match=r"bomb\.png .* declares 2000x2000 = 4,000,000 pixels, "
                                        r"over the limit of 3,999,999"):
        images.decode_image(blob, "bomb.png", max_pixels=3_999_999)
    assert images.decode_image(blob, "bomb.png", max_pixels=4_000_000).shape == (2000, 2000, 3)
    source = tmp_path / "tree"
    _tree(str(source), ".png")
    out = str(tmp_path / "out")
    assert main(["--source", str(source), "--output-dir", out, "--quiet",
                 "--max-image-pixels", "1023"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "declares 32x32 = 1,024 pixels" in err
    assert main(["--source", str(source), "--output-dir", out, "--quiet",
                 "--max-image-pixels", "0"]) == 2
    assert "--max-image-pixels must be a positive number" in capsys.readouterr().err
    assert main(["--source", str(source), "--output-dir", out, "--quiet",
                 "--max-image-pixels", "1024"]) == 0
    stats = json.load(open(os.path.join(out, "cifar10_stats.json")))
    assert stats["conversion"]["max_image_pixels"] == 1024 and "skipped" not in stats


def test_our_limit_replaces_pillows_and_leaves_its_settings_alone(monkeypatch):
    """A limit the user raised holds even above Pillow's hard limit (2x its MAX_IMAGE_PIXELS),
    without its warning; Pillow's settings are as before afterwards."""
    import warnings

    from PIL import Image, ImageFile
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    blob = bomb_png(side=2000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(blob))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert images.decode_image(blob, "big.png", max_pixels=4_000_000).shape == (2000, 2000, 3)
        jpeg = _encode(Image.fromarray(_rgb()), "JPEG")
        with pytest.raises(DataError, match="truncated"):  # LOAD_TRUNCATED_IMAGES stays off
            images.decode_image(jpeg[:len(jpeg) * 9 // 10], "cut.jpg")
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (1000, True)


# ------------------------------------------------------------------ truncated and damaged files

@pytest.mark.parametrize("fmt, cut", [("JPEG", 0.9), ("JPEG", 0.5), ("JPEG", -2), ("PNG", 0.9),
                                      ("PNG", -12)])
def test_a_cut_jpeg_or_png_is_refused_not_filled(fmt, cut):
    from PIL import Image
    blob = _encode(Image.fromarray(_rgb()), fmt)
    end = len(blob) + cut if cut < 0 else int(len(blob) * cut)  # -2: no EOI; -12: no IEND
    assert images.decode_image(blob, "whole").shape == (32, 32, 3)
    with pytest.raises(DataError, match=r"^cut\.img: .*(truncated|corrupt)"):
        images.decode_image(blob[:end], "cut.img")


def test_jpeg_end_check_skips_an_exif_thumbnail():
    """A JPEG whose EXIF thumbnail has an end marker is cut after it: still refused."""
    from PIL import Image
    thumb = _encode(Image.fromarray(_rgb(1, (8, 8))), "JPEG")
    exif = Image.Exif()
    exif[0x010E] = "described"
    app1 = b"Exif\x00\x00" + exif.tobytes()[6:] + thumb  # a thumbnail-like payload with FFD9
    blob = _encode(Image.fromarray(_rgb()), "JPEG", exif=app1[6:])
    assert thumb[-2:] == b"\xff\xd9" and blob.count(b"\xff\xd9") >= 2
    assert images.decode_image(blob, "x.jpg").shape == (32, 32, 3)
    with pytest.raises(DataError, match="no end-of-image marker"):
        images.decode_image(blob[:-2], "x.jpg")


def test_other_formats_are_not_opened(tmp_path):
    """Only image formats of a tree are opened: an EPS (Pillow would run Ghostscript) is not."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"
    with pytest.raises(DataError, match="cannot decode the image"):
        images.decode_image(eps, "x.png")
    with pytest.raises(DataError, match="empty"):
        images.decode_image(b"", "x.png")
    with pytest.raises(DataError, match="does not exist"):
        images.read_image(str(tmp_path / "missing.png"))


def test_converter_refuses_a_truncated_jpeg_and_skip_bad_lists_it(tmp_path, capsys):
    source = str(tmp_path / "tree")
    pixels = _tree(source)
    bad = os.path.join(source, "train", "a", "1.jpg")
    _cut(bad, 0.9)
    out = str(tmp_path / "out")
    assert main(["--source", source, "--output-dir", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and bad in err and "truncated" in err and "--skip-bad" in err
    assert not os.path.exists(os.path.join(out, "cifar10_stats.json"))
    stats = prepare(source=source, output_dir=out, skip_bad=True, quiet=True, log=lambda m: None)
    assert stats["skipped"] == [{"file": "train/a/1.jpg", "reason": stats["skipped"][0]["reason"]}]
    assert bad in stats["skipped"][0]["reason"] and "truncated" in stats["skipped"][0]["reason"]
    assert stats["num_train"] == 5 and stats["num_val"] == 4
    listed = open(os.path.join(out, "cifar10_train.lst")).read()
    assert "train/a/1.jpg" not in listed and "train/a/2.jpg" in listed
    assert len(pixels) == stats["num_train"] + stats["num_val"] + 1


# ------------------------------------------------------------------ colour modes

def _modes():
    """(name, file bytes, expected RGB) for the colour modes users' images come in."""
    from PIL import Image
    rgb = _rgb(3, (24, 40))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    alpha = np.dstack([rgb, np.arange(24 * 40, dtype=np.uint8).reshape(24, 40)])
    palette = Image.fromarray(rgb).convert("P")
    deep = rgb.astype(np.uint16) * 257  # 16-bit
    import cv2
    return [("rgb png", _encode(Image.fromarray(rgb), "PNG"), rgb),
            ("grey png", _encode(Image.fromarray(grey), "PNG"), np.dstack([grey] * 3)),
            ("rgba png", _encode(Image.fromarray(alpha), "PNG"), rgb),  # alpha dropped
            ("palette png", _encode(palette, "PNG"), np.asarray(palette.convert("RGB"))),
            ("16-bit png", cv2.imencode(".png", deep[:, :, ::-1])[1].tobytes(), rgb),
            ("16-bit grey png", cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes(),
             np.dstack([grey] * 3)),
            ("cmyk jpeg", _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=100), rgb),
            ("grey jpeg", _encode(Image.fromarray(grey), "JPEG", quality=100), np.dstack([grey] * 3)),
            ("gif", _encode(palette, "GIF"), np.asarray(palette.convert("RGB"))),
            ("webp", _encode(Image.fromarray(rgb), "WEBP", lossless=True), rgb)]


@pytest.mark.parametrize("case", range(10))
def test_every_colour_mode_comes_back_as_rgb(case):
    name, blob, expected = _modes()[case]
    image = images.decode_image(blob, name)
    assert image.dtype == np.uint8 and image.shape == (24, 40, 3), name
    tolerance = 8 if "jpeg" in name else 0  # lossy
    assert np.abs(image.astype(int) - expected).max() <= tolerance, name
    grey = images.decode_image(blob, name, grey=True)
    assert grey.shape == (24, 40, 1)


def test_a_tree_of_mixed_modes_converts(tmp_path, fx):
    """CMYK, grey, palette and alpha images in one tree: all RGB in the records."""
    from PIL import Image
    source = str(tmp_path / "tree")
    expected = {}
    for rel, mode in (("train/a/cmyk.jpg", "CMYK"), ("train/a/grey.png", "L"),
                      ("train/b/palette.png", "P"), ("train/b/alpha.png", "RGBA"),
                      ("test/a/grey.jpg", "L"), ("test/b/rgb.png", "RGB")):
        os.makedirs(os.path.dirname(os.path.join(source, rel)), exist_ok=True)
        image = Image.fromarray(_rgb(len(expected))).convert(mode)
        image.save(os.path.join(source, rel), quality=100)
        expected[rel] = np.asarray(image.convert("RGB"))
    out = str(tmp_path / "out")
    stats = prepare(source=source, output_dir=out, quiet=True, log=lambda m: None)
    assert stats["num_train"] == 4 and stats["num_val"] == 2
    for split, names in (("train", list(expected)[:4]), ("val", list(expected)[4:])):
        decoded, _, _ = fx.read_rec(os.path.join(out, "cifar10_%s.rec" % split))
        for got, rel in zip(decoded, sorted(names)):
            assert np.abs(got.astype(int) - expected[rel]).max() <= (8 if rel.endswith(".jpg") else 0), rel


def test_a_jpeg_cut_right_after_an_end_marker_inside_a_segment_is_refused():
    """A file ending with FFD9 skips the segment walk; cut after an FFD9 that sits in a
    segment (a comment between progressive scans, an EXIF thumbnail), it is still refused."""
    from PIL import Image
    blob = _encode(Image.fromarray(_rgb(2, (64, 64))), "JPEG", progressive=True)
    scans = [i for i in range(len(blob) - 1) if blob[i:i + 2] == b"\xff\xda"]
    comment = b"\xff\xfe\x00\x06ab\xff\xd9"
    crafted = blob[:scans[2]] + comment + blob[scans[2]:]
    assert images.decode_image(crafted, "whole.jpg").shape == (64, 64, 3)
    with pytest.raises(DataError, match=r"^cut\.jpg: .*truncated"):
        images.decode_image(crafted[:scans[2] + len(comment)], "cut.jpg")
    thumb = _encode(Image.fromarray(_rgb(1, (8, 8))), "JPEG")
    exif = Image.Exif()
    exif[0x010E] = "described"
    blob = _encode(Image.fromarray(_rgb()), "JPEG", exif=exif.tobytes()[6:] + thumb)
    cut = blob[:blob.index(thumb) + len(thumb)]
    assert cut.endswith(b"\xff\xd9")
    with pytest.raises(DataError, match="cut.jpg"):
        images.decode_image(cut, "cut.jpg")


# ------------------------------------------------------------------ OpenCV and Pillow agree


def _photo(width=203, height=151):
    """A smooth RGB picture with edges (JPEG-like content, unlike noise)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, ((x // 17 + y // 13) % 2) * 200 + 30], -1)
    return rgb.astype(np.uint8)


def _jpeg_cases():
    from PIL import Image
    photo = Image.fromarray(_photo())
    rotated = Image.Exif()
    rotated[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to display
    return [("420", _encode(photo, "JPEG", quality=90)),
            ("444 progressive", _encode(photo, "JPEG", quality=95, subsampling=0, progressive=True)),
            ("exif rotated", _encode(photo, "JPEG", quality=90, exif=rotated.tobytes())),
            ("grey", _encode(photo.convert("L"), "JPEG", quality=90)),
            ("cmyk", _encode(photo.convert("CMYK"), "JPEG", quality=90))]


@pytest.mark.parametrize("min_side", [None, 100, 50, 18])  # DCT scales 1, 1/2, 1/4, 1/8
@pytest.mark.parametrize("case", range(5))
def test_opencv_decodes_jpegs_to_the_pixels_pillow_gives(case, min_side):
    """Grey and RGB JPEGs go through OpenCV's decoder for speed; the pixels, size,
    orientation and DCT scale are exactly those of the Pillow decoder the rest use."""
    from PIL import Image
    name, blob = _jpeg_cases()[case]
    assert images._opencv_decodes(Image.open(io.BytesIO(blob))) == (name != "cmyk")
    for grey in (False, True):
        opened = Image.open(io.BytesIO(blob))
        fast = images.decode_image(blob, name, grey=grey, min_side=min_side)
        assert fast.flags.c_contiguous
        reference = images._decode_pillow(opened, name, grey, min_side)
        assert fast.shape == reference.shape and np.array_equal(fast, reference), (name, grey)
        if min_side:
            assert min(fast.shape[:2]) >= min_side
    bgr = images.decode_image(blob, name, bgr=True)
    assert np.array_equal(bgr, images.decode_image(blob, name)[:, :, ::-1])


def test_a_jpeg_with_a_broken_header_is_one_error_under_opencv():
    blob = bytearray(_encode(__import__("PIL.Image").Image.fromarray(_photo()), "JPEG"))
    start = blob.index(b"\xff\xc4")  # the first Huffman table: zeroed, OpenCV cannot decode
    blob[start + 4: start + 40] = bytes(36)
    with pytest.raises(DataError, match="cannot decode the image"):
        images.decode_image(bytes(blob), "broken.jpg")


def test_opencv_and_pillow_agree_on_every_exif_orientation():
    from PIL import Image
    photo = Image.fromarray(_photo(67, 41))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        blob = _encode(photo, "JPEG", quality=90, exif=exif.tobytes())
        fast = images.decode_image(blob, "o.jpg", min_side=20)
        reference = images._decode_pillow(Image.open(io.BytesIO(blob)), "o.jpg", False, 20)
        assert np.array_equal(fast, reference), orientation
