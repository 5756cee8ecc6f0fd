"""inference/torch_file.py and torch_pickle.py without torch: both formats, and hostile files."""
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from mxcnn.inference import torch_file
from mxcnn.inference.torch_file import TorchFileError
from mxcnn.inference.torch_pickle import state_dict_pickle


def sample_tensors():
    rng = np.random.RandomState(0)
    return OrderedDict([
        ("conv.weight", rng.randn(4, 3, 3, 3).astype(np.float32)),
        ("fc.weight", rng.randn(5, 7).astype(np.float32).T),          # not C-contiguous
        ("bn.num_batches_tracked", np.array(7, np.int64)),            # 0-d
        ("half", rng.randn(6).astype(np.float16)),
        ("double", rng.randn(2, 2)),
        ("mask", np.array([True, False, True])),
        ("empty", np.zeros((0, 3), np.float32)),
    ])


def assert_same(read, wanted):
    assert list(read) == list(wanted)
    for name, value in wanted.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape, name
        assert np.array_equal(read[name], value), name


def legacy_bytes(tensors, wrap=False):
    """torch.save's legacy format, built by hand: header pickles, the object, keys, storages."""
    out = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, out, protocol=2)
    items = list(tensors.items())
    body = state_dict_pickle([(n, np.ascontiguousarray(v)) for n, v in items])
    if wrap:  # {"state_dict": {"module." + name: tensor}, "epoch": 3} around the same opcodes
        body = state_dict_pickle([("module." + n, np.ascontiguousarray(v)) for n, v in items])
        body = (b"\x80\x02}q\x00(X\x0a\x00\x00\x00state_dictq\x01" + body[2:-1]
                + b"X\x05\x00\x00\x00epochq\x02K\x03u.")
    out.write(body)
    pickle.dump([str(i) for i in range(len(items))], out, protocol=2)
    for _, value in items:
        value = np.ascontiguousarray(value)
        out.write(struct.pack("<q", value.size) + value.tobytes())
    return out.getvalue()


def test_zip_round_trip_keeps_every_dtype_shape_and_value(tmp_path):
    path = str(tmp_path / "w.pth")
    torch_file.write_state_dict(path, sample_tensors())
    assert_same(torch_file.read_state_dict(path), sample_tensors())
    with zipfile.ZipFile(path) as archive:  # torch's layout: stored, 64-byte aligned records
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if "/data/" in info.filename:
                with open(path, "rb") as handle:
                    handle.seek(info.header_offset + 26)
                    name_len, extra_len = struct.unpack("<HH", handle.read(4))
                assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("wrap", [False, True])
def test_legacy_format_and_wrappers(tmp_path, wrap):
    path = tmp_path / "w.th"
    wanted = OrderedDict((k, v) for k, v in sample_tensors().items() if v.size)
    path.write_bytes(legacy_bytes(wanted, wrap))
    read = torch_file.read_state_dict(str(path))
    assert_same(read, OrderedDict((k, np.ascontiguousarray(v)) for k, v in wanted.items()))


def test_bfloat16_is_widened_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # these three are exact in bfloat16
    path = tmp_path / "bf16.pth"
    raw = state_dict_pickle([("w", bits.view(np.int16))]).replace(b"ShortStorage", b"BFloat16Storage")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", raw)
        archive.writestr("archive/data/0", bits.tobytes())
    read = torch_file.read_state_dict(str(path))["w"]
    assert read.dtype == np.float32 and np.array_equal(read, values)


# ----------------------------------------------------------------------------- hostile files
class Payload:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch %s" % self.marker,))


def payload_files(tmp_path):
    marker = tmp_path / "marker"
    evil = pickle.dumps(OrderedDict([("w", Payload(marker))]), protocol=2)
    zipped = tmp_path / "evil.pth"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", evil)
    legacy = tmp_path / "evil.th"
    head = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {}))
    legacy.write_bytes(head + evil + pickle.dumps([], protocol=2))
    plain = tmp_path / "evil.pt"
    plain.write_bytes(evil)
    return marker, [zipped, legacy, plain]


def test_a_crafted_pickle_runs_nothing(tmp_path):
    marker, files = payload_files(tmp_path)
    for path in files:
        with pytest.raises(TorchFileError) as err:
            torch_file.read_state_dict(str(path))
        assert not marker.exists(), path
        message = str(err.value)
        assert "\n" not in message
        assert str(path) in message
        if path.suffix != ".pt":  # the plain pickle lacks torch's magic number: refused earlier
            assert "system" in message and "refused" in message
    pickle.loads(pickle.dumps(Payload(marker), protocol=2))  # the payload does work unguarded
    assert marker.exists()


def truncated(tmp_path, fraction):
    good = tmp_path / "good.pth"
    torch_file.write_state_dict(str(good), sample_tensors())
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:int(len(data) * fraction)])
    legacy = tmp_path / "cut.th"
    full = legacy_bytes(OrderedDict((k, v) for k, v in sample_tensors().items() if v.size))
    legacy.write_bytes(full[:int(len(full) * fraction)])
    return [cut, legacy]


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_truncated_files(tmp_path, fraction):
    for path in truncated(tmp_path, fraction):
        with pytest.raises(TorchFileError, match="truncated|corrupt"):
            torch_file.read_state_dict(str(path))


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, compress in members:
            archive.writestr(name, data, compress_type=compress)
    return str(path)


def test_zip_members_outside_the_archive_and_bombs_are_refused(tmp_path):
    array = np.arange(4, dtype=np.float32)
    body = state_dict_pickle([("w", array)])
    stored, deflated = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
    cases = {
        "points outside": [("archive/data.pkl", body, stored), ("../evil", b"x", stored)],
        "outside the archive": [("archive/data.pkl", body, stored), ("/etc/evil", b"x", stored)],
        "compressed": [("archive/data.pkl", body, stored),
                       ("archive/data/0", array.tobytes(), deflated)],
        "holds 8 bytes": [("archive/data.pkl", body, stored), ("archive/data/0", b"\0" * 8, stored)],
        "missing its storage": [("archive/data.pkl", body, stored)],
        "not a PyTorch save": [("archive/other.pkl", body, stored)],
    }
    for words, members in cases.items():
        path = _zip(tmp_path / "case.pth", members)
        with pytest.raises(TorchFileError, match=words):
            torch_file.read_state_dict(path)


def test_declared_sizes_beyond_the_file_are_refused_before_allocating(tmp_path):
    huge = b"\x80\x02B" + struct.pack("<I", 2 ** 31) + b"abc."    # BINBYTES of 2 GiB, 3 present
    path = _zip(tmp_path / "big.pth", [("archive/data.pkl", huge, zipfile.ZIP_STORED)])
    with pytest.raises(TorchFileError, match="truncated or corrupt"):
        torch_file.read_state_dict(path)
    array = np.arange(4, dtype=np.float32)  # a tensor view reaching past its 4-element storage
    body = state_dict_pickle([("w", array)]).replace(b"(K\x04t", b"(K\x09t")  # shape (4,) -> (9,)
    path = _zip(tmp_path / "view.pth", [("archive/data.pkl", body, zipfile.ZIP_STORED),
                                        ("archive/data/0", array.tobytes(), zipfile.ZIP_STORED)])
    with pytest.raises(TorchFileError, match="reaches beyond its storage"):
        torch_file.read_state_dict(path)
    legacy = tmp_path / "count.th"  # a storage claiming more elements than the file holds
    data = bytearray(legacy_bytes(OrderedDict([("w", array)])))
    data[-16 - 8:-16] = struct.pack("<q", 10 ** 12)
    legacy.write_bytes(bytes(data))
    with pytest.raises(TorchFileError, match="truncated"):
        torch_file.read_state_dict(str(legacy))


def test_object_building_opcodes_and_other_files_are_refused(tmp_path):
    inst = b"\x80\x02(ios\nsystem\nX\x04\x00\x00\x00true."
    path = _zip(tmp_path / "inst.pth", [("archive/data.pkl", inst, zipfile.ZIP_STORED)])
    with pytest.raises(TorchFileError, match="opcode INST"):
        torch_file.read_state_dict(path)
    for data, words in ((b"", "empty"), (b"hello world", "not a PyTorch file"),
                        (b"\x80\x02K\x05.", "magic number")):
        other = tmp_path / "other.pth"
        other.write_bytes(data)
        with pytest.raises(TorchFileError, match=words):
            torch_file.read_state_dict(str(other))
    with pytest.raises(TorchFileError, match="is a folder"):
        torch_file.read_state_dict(str(tmp_path))


def test_a_file_without_a_state_dict_names_what_it_holds(tmp_path):
    body = pickle.dumps({"epoch": 3, "arch": "resnet"}, protocol=2)
    path = _zip(tmp_path / "ckpt.pth", [("archive/data.pkl", body, zipfile.ZIP_STORED)])
    with pytest.raises(TorchFileError, match="holds no state_dict .*arch, epoch"):
        torch_file.read_state_dict(path)
