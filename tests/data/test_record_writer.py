"""data.recfile.SplitWriter writes RecordIO without MXNet: its .rec and .idx are byte for byte
those of mx.recordio.MXIndexedRecordIO, magic words inside the data included, and MXNet's own
reader gets every record back."""
import struct

import mxnet as mx
import numpy as np

from mxcnn.data import recfile

MAGIC = struct.pack("<I", recfile.RECORD_MAGIC)


def _payloads():
    """Encoded-image stand-ins of every length mod 4, with the magic word at aligned and
    unaligned offsets, twice in a row, at the very start and at the end."""
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 2, 3, 5, 97)]
    # offsets in the record: the 24-byte IRHeader comes first, so payload offset k is record
    # offset 24 + k (aligned when k % 4 == 0)
    crafted = [MAGIC, MAGIC + MAGIC + b"x", b"ab" + MAGIC + b"cd", b"abcd" + MAGIC,
               b"a" + MAGIC + b"bcdefg" + MAGIC, noise[5][:40] + MAGIC + noise[5][40:] + MAGIC]
    return noise + crafted


def test_records_are_those_mxnet_writes(tmp_path):
    ours = recfile.SplitWriter(str(tmp_path), "ours", "train")
    theirs = mx.recordio.MXIndexedRecordIO(str(tmp_path / "mx.idx"), str(tmp_path / "mx.rec"), "w")
    for i, payload in enumerate(_payloads()):
        key, label = 3 * i + 1, float(i % 7)
        ours.add_encoded(payload, label, key, "img%d.jpg" % i)
        theirs.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, label, key, 0), payload))
    ours.close()
    theirs.close()
    for ext in ("rec", "idx"):
        with open(ours.paths[ext], "rb") as a, open(str(tmp_path / ("mx." + ext)), "rb") as b:
            assert a.read() == b.read(), ext
    reader = mx.recordio.MXIndexedRecordIO(ours.paths["idx"], ours.paths["rec"], "r")
    for i, payload in enumerate(_payloads()):
        header, data = mx.recordio.unpack(reader.read_idx(3 * i + 1))
        assert data == payload and header.id == 3 * i + 1 and header.label == i % 7
    assert [bytes(record) for _, record in recfile.read_records(ours.paths["rec"])] == [
        recfile.image_record(float(i % 7), 3 * i + 1, p) for i, p in enumerate(_payloads())]


def test_images_are_those_pack_img_writes(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for fmt, quality in ((".png", 3), (".jpg", 90)):
        writer = recfile.SplitWriter(str(tmp_path), fmt[1:], "val", fmt, quality)
        writer.add(image, 2, "a.png")
        writer.close()
        expected = mx.recordio.pack_img(mx.recordio.IRHeader(0, 2.0, 0, 0), image[:, :, ::-1],
                                        quality, fmt)
        with open(writer.paths["rec"], "rb") as f:
            assert f.read() == recfile.framed(expected)
        with open(writer.paths["lst"]) as f:
            assert f.read() == "0\t2.000000\ta.png\n"
