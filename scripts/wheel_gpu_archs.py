"""Which NVIDIA GPU architectures a wheel's CUDA libraries carry: SASS (sm_XX) and PTX (compute_XX).

    python scripts/wheel_gpu_archs.py WHEEL_OR_SO [...] [--json]

For every ELF shared library in a wheel (or each ``.so`` named), this reads the CUDA fat
binaries (fatbins) that the CUDA runtime registers at load time, from the ``.nv_fatbin``
section (the library's own kernels) and ``__nv_relfatbin`` (device code linked in from
NVIDIA's static libraries, such as the device runtime), and prints one line per distinct
(SASS, PTX) set with how many fatbins carry it.  It reads only the headers, the same fields
``cuobjdump --list-elf`` / ``--list-ptx`` print, and runs nothing from the file.

Fatbin layout (little-endian): a container header ``<IHHQ`` = magic 0xBA55ED50, version,
header size, size of the entries that follow; each entry header starts ``<HHIQ`` = kind
(1 PTX, 2 ELF cubin), version, header size, payload size, and holds the architecture as a
u32 at offset 28 (52 -> sm_52 / compute_52).  Standard library only.
"""
import argparse
import json
import mmap
import os
import shutil
import struct
import sys
import tempfile
import zipfile

FATBIN_MAGIC = 0xBA55ED50
FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQ")
_KINDS = {1: "ptx", 2: "sass"}


class FormatError(ValueError):
    """The bytes are not the ELF or fatbin structure they should be."""


def elf_sections(data) -> dict:
    """``{name: (file offset, size)}`` of a 64-bit little-endian ELF file's sections."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise FormatError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    sections = {}
    for name_off, _type, _flags, _addr, offset, size in headers:
        start = names_at + name_off
        name = bytes(data[start:data.find(b"\0", start)]).decode("ascii", "replace")
        sections[name] = (offset, size)
    return sections


def fatbin_entries(data, start: int, size: int) -> list:
    """``[[(kind, arch), ...] per fatbin]`` for the fatbins packed in ``data[start:start+size]``.

    ``kind`` is ``"sass"`` or ``"ptx"``; fatbins are 8-byte aligned, so the scan steps 8 bytes
    over padding between them.
    """
    fatbins, pos, end = [], start, start + size
    while pos + _CONTAINER.size <= end:
        magic, _version, header_size, entries_size = _CONTAINER.unpack_from(data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8
            continue
        entry, stop = pos + header_size, pos + header_size + entries_size
        if stop > end:
            raise FormatError("fatbin at offset %d runs past its section" % pos)
        found = []
        while entry < stop:
            kind, _v, entry_header, payload = _ENTRY.unpack_from(data, entry)
            if entry_header < 32 or entry + entry_header + payload > stop:
                raise FormatError("bad fatbin entry at offset %d" % entry)
            arch, = struct.unpack_from("<I", data, entry + 28)
            found.append((_KINDS.get(kind, "kind%d" % kind), arch))
            entry += entry_header + payload
        fatbins.append(found)
        pos = (stop + 7) // 8 * 8
    return fatbins


def library_archs(data) -> dict:
    """``{section: [{"sass": [..], "ptx": [..], "fatbins": n}, ...]}`` for one ELF library."""
    sections = elf_sections(data)
    report = {}
    for name in FATBIN_SECTIONS:
        if name not in sections:
            continue
        counts = {}
        for found in fatbin_entries(data, *sections[name]):
            key = (tuple(sorted({a for k, a in found if k == "sass"})),
                   tuple(sorted({a for k, a in found if k == "ptx"})))
            counts[key] = counts.get(key, 0) + 1
        report[name] = [{"sass": list(s), "ptx": list(p), "fatbins": n}
                        for (s, p), n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return report


def _scan_file(path: str) -> dict:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return {}
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return library_archs(data) if data[:4] == b"\x7fELF" else {}


def scan(path: str) -> dict:
    """``{library name: library_archs}`` for a wheel (every ``.so`` member) or one library."""
    if not zipfile.is_zipfile(path):
        return {os.path.basename(path): _scan_file(path)}
    result = {}
    with zipfile.ZipFile(path) as wheel, tempfile.TemporaryDirectory() as tmp:
        for member in wheel.infolist():
            if ".so" not in os.path.basename(member.filename):
                continue
            target = os.path.join(tmp, "lib.so")
            with wheel.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
            found = _scan_file(target)
            os.remove(target)
            if found:
                result[member.filename] = found
    return result


def format_report(path: str, libraries: dict) -> list:
    """Human-readable lines: one per library section and (SASS, PTX) set."""
    lines = []
    for library, sections in libraries.items():
        for section, groups in sections.items():
            for g in groups:
                lines.append("%s %s %s: %d fatbin(s) sass=%s ptx=%s" % (
                    os.path.basename(path), library, section, g["fatbins"],
                    ",".join("sm_%d" % a for a in g["sass"]) or "-",
                    ",".join("compute_%d" % a for a in g["ptx"]) or "-"))
    return lines or ["%s: no CUDA fatbin found" % os.path.basename(path)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="wheels (.whl) or ELF libraries (.so)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    results = {}
    for path in args.paths:
        try:
            results[path] = scan(path)
        except (OSError, FormatError, zipfile.BadZipFile) as exc:
            print("wheel_gpu_archs: cannot read %s: %s" % (path, exc), file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(results, indent=1, sort_keys=True))
    else:
        for path, libraries in results.items():
            print("\n".join(format_report(path, libraries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
