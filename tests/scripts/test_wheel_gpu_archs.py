"""scripts/wheel_gpu_archs.py: SASS and PTX architectures from an ELF library's CUDA fatbins."""
import importlib.util
import json
import os
import struct
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SPEC = importlib.util.spec_from_file_location(
    "wheel_gpu_archs", os.path.join(ROOT, "scripts", "wheel_gpu_archs.py"))
archs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(archs)


def _entry(kind, arch, payload=b"\x00" * 24):
    """One fatbin entry: a 64-byte header (kind, version, header size, payload size, ...,
    arch at offset 28) and its payload."""
    header = struct.pack("<HHIQ", kind, 0x0101, 64, len(payload)) + b"\x00" * 8
    header += struct.pack("<HHI", 4, 7, arch) + b"\x00" * 32
    return header + payload


def _fatbin(*entries):
    body = b"".join(entries)
    return struct.pack("<IHHQ", archs.FATBIN_MAGIC, 1, 16, len(body)) + body


def _elf(sections):
    """A minimal 64-bit little-endian ELF file holding ``{name: bytes}`` sections."""
    names = b"\x00" + b"".join(n.encode() + b"\x00" for n in list(sections) + [".shstrtab"])
    blobs, offset, headers = b"", 64, [b"\x00" * 64]
    for name, data in list(sections.items()) + [(".shstrtab", names)]:
        headers.append(struct.pack("<IIQQQQIIQQ", names.index(name.encode() + b"\x00"), 1, 0, 0,
                                   offset + len(blobs), len(data), 0, 0, 8, 0))
        blobs += data + b"\x00" * (-len(data) % 8)
    shoff = 64 + len(blobs)
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\x00" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64,
                          len(headers), len(headers) - 1)
    return header + blobs + b"".join(headers)


def _library():
    own = (_fatbin(_entry(2, 50), _entry(2, 80), _entry(1, 80)) + b"\x00" * 8  # padding
           + _fatbin(_entry(2, 80), _entry(2, 50), _entry(1, 80))
           + _fatbin(_entry(2, 86)))
    return _elf({".text": b"\x90" * 16, ".nv_fatbin": own,
                 "__nv_relfatbin": _fatbin(_entry(2, 35), _entry(1, 75))})


def test_fatbins_are_grouped_by_their_architectures():
    report = archs.library_archs(_library())
    assert report[".nv_fatbin"] == [{"sass": [50, 80], "ptx": [80], "fatbins": 2},
                                    {"sass": [86], "ptx": [], "fatbins": 1}]
    assert report["__nv_relfatbin"] == [{"sass": [35], "ptx": [75], "fatbins": 1}]
    assert archs.library_archs(_elf({".text": b"\x90" * 16})) == {}


def test_wheel_members_are_read_and_reported(tmp_path, capsys):
    wheel = tmp_path / "mxnet_cu999-1.9.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mxnet/libmxnet.so", _library())
        z.writestr("mxnet/libopenblas.so.0", _elf({".text": b"\x90" * 16}))
        z.writestr("mxnet/__init__.py", "")
    assert archs.main([str(wheel)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ("mxnet_cu999-1.9.1-py3-none-any.whl mxnet/libmxnet.so .nv_fatbin: 2 fatbin(s) "
            "sass=sm_50,sm_80 ptx=compute_80") in lines
    assert len(lines) == 3 and "sass=sm_86 ptx=-" in lines[1]
    assert archs.main([str(wheel), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data[str(wheel)]) == ["mxnet/libmxnet.so"]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    broken = bytearray(_library())
    start = broken.index(struct.pack("<I", archs.FATBIN_MAGIC))
    struct.pack_into("<Q", broken, start + 8, 1 << 40)  # a fatbin longer than its section
    path = tmp_path / "libbroken.so"
    path.write_bytes(bytes(broken))
    assert archs.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs past its section" in err
    text = tmp_path / "notes.txt"
    text.write_text("not a library")
    assert archs.main([str(text)]) == 0
    assert "no CUDA fatbin found" in capsys.readouterr().out
    with pytest.raises(archs.FormatError):
        archs.elf_sections(b"\x7fELF\x01\x01" + b"\x00" * 58)
