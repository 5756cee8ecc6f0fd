"""What the hostile-input tests of several packages share: a decompression-bomb PNG, and a
command run with its own peak memory measured."""
import os
import struct
import subprocess
import sys
import zlib

#: runs ``sys.argv[1]`` (a module name, or a script path) as ``__main__`` and, at exit, writes
#: its peak resident memory to $PEAK_RSS_FILE.  VmHWM belongs to the process's own address
#: space; ``ru_maxrss`` of a forked child starts at the parent's size (pytest's, which grows).
_PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _write_peak():
    with open('/proc/self/status') as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))
    with open(os.environ['PEAK_RSS_FILE'], 'w') as out:
        out.write(str(kib * 1024))
atexit.register(_write_peak)
sys.argv = sys.argv[1:]
if sys.argv[0].endswith('.py'):
    runpy.run_path(sys.argv[0], run_name='__main__')
else:
    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side=20000):
    """A valid ~50 KB PNG that declares side x side 1-bit grey pixels (all black; 20000 x 20000
    is 1.2 GB as decoded RGB)."""
    rows = bytes(1 + (side + 7) // 8) * 1000  # filter byte + packed pixels, 1000 rows
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(rows) for _ in range(side // 1000)) + deflate.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def run_with_peak_memory(target, args, workdir, timeout=120):
    """Run module or script ``target`` with ``args``; ``(exit status, stderr, peak RSS bytes)``."""
    peak_file = os.path.join(str(workdir), "peak-rss")
    proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, target] + list(args),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout,
                          env=dict(os.environ, PEAK_RSS_FILE=peak_file))
    with open(peak_file) as handle:
        return proc.returncode, proc.stderr, int(handle.read())
