"""Shared by the bench scripts (and importable by any interpreter: no MXNet, no torch).

* ``time_steps``: the one timing loop every framework's measurement goes through.
* ``RESULT_TAG``: a measuring subprocess prints its result as ``RESULT_TAG + json``.
* ``cpu_peak``: the FP32 peak of the cores this process may use: cores x clock x FP32 lanes
  x 2 (FMA) x FMA units, with the clock measured while every core is busy
  (``measure_cpu``, bench/cpu_peak.c) or, without a C compiler, the nominal clock of
  /proc/cpuinfo.
"""
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the shared helpers; import-light, so any venv can load them

from common import atomic_write, usable_cores  # noqa: E402

RESULT_TAG = "BENCH-RESULT "
#: Timed seconds per measurement (after warm-up) when no batch count is given.
TARGET_SECONDS = 6.0
WARMUP_STEPS = 2
MIN_STEPS = 3


def time_steps(step, sync, batch_size, batches=None, seconds=TARGET_SECONDS):
    """Run ``step()`` (one training step; may be asynchronous) and return images/s.

    ``sync(last_result)`` blocks until the work is done.  After ``WARMUP_STEPS`` steps, one
    timed step estimates the cost; then ``batches`` steps (or enough for ``seconds``, at
    least ``MIN_STEPS``) are timed as a whole, synchronising only at the end.
    """
    for _ in range(WARMUP_STEPS):
        sync(step())
    start = time.perf_counter()
    sync(step())
    estimate = time.perf_counter() - start
    count = batches or max(MIN_STEPS, int(math.ceil(seconds / max(estimate, 1e-6))))
    start = time.perf_counter()
    result = None
    for _ in range(count):
        result = step()
    sync(result)
    elapsed = time.perf_counter() - start
    return {"img_s": count * batch_size / elapsed, "batches": count, "seconds": elapsed}


def median(values):
    return statistics.median(values) if values else float("nan")


def _cpuinfo():
    fields = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cache_dir():
    root = os.environ.get("MXCNN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mxcnn")
    return os.path.join(root, "bench")


def measure_cpu(cores=None, avx512=False, iterations=400000000):
    """Clock and FMA throughput with one thread per core, all at once (bench/cpu_peak.c).

    Returns ``{"ghz": mean GHz, "gflops": measured FP32 FMA GFLOP/s, "threads": n}`` or
    ``None`` when no C compiler is there or the program fails.  The binary is built once
    into ``$MXCNN_CACHE_DIR/bench`` (default ~/.cache/mxcnn/bench).
    """
    cores = cores or usable_cores()
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    source = os.path.join(HERE, "cpu_peak.c")
    if not compiler or not os.path.exists(source):
        return None
    flags = ["-O2", "-pthread", "-mavx2", "-mfma"] + (["-mavx512f", "-DUSE_AVX512"] if avx512 else [])
    with open(source, "rb") as handle:
        digest = hashlib.sha1(handle.read() + " ".join(flags).encode()).hexdigest()[:12]
    binary = os.path.join(_cache_dir(), "cpu_peak-" + digest)
    try:
        if not os.path.exists(binary):
            def build(tmp):  # atomic: a concurrent run sees no binary or the whole one
                subprocess.run([compiler] + flags + [source, "-o", tmp], capture_output=True,
                               timeout=120, check=True)
                os.chmod(tmp, 0o755)
            atomic_write(binary, build)
        run = subprocess.run([binary, str(cores), str(int(iterations))], capture_output=True,
                             text=True, timeout=120)
        result = json.loads(run.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):  # CalledProcessError: no build
        return None
    return {"ghz": sum(result["ghz"]) / len(result["ghz"]), "gflops": result["gflops"],
            "threads": result["threads"]}


def cpu_peak(cores=None, measure=True):
    """``(gflops, explanation)``: FP32 peak = cores x GHz x FP32 lanes x 2 (FMA) x FMA units.

    Lanes: AVX-512 16, AVX2 8, else SSE 4, capped by the datapath width: AMD before Zen 5
    (family < 0x1A) executes 512-bit vectors as two 256-bit halves.  FMA units: 2 per core
    (Zen 2-5 and Intel server cores since Skylake).  Clock: measured with every core busy
    (``measure_cpu``: boost included, which is what the training runs at); without a C
    compiler, or with ``measure=False``, the "cpu MHz" of /proc/cpuinfo (under a hypervisor
    the nominal clock, an underestimate when the cores boost).
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = cores or usable_cores()
    try:
        ghz = float(info.get("cpu MHz", "0")) / 1000.0
    except ValueError:
        ghz = 0.0
    isa_bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    datapath = isa_bits
    amd = info.get("vendor_id") == "AuthenticAMD"
    try:
        family = int(info.get("cpu family", "0"))
    except ValueError:
        family = 0
    if amd and family < 0x1A:
        datapath = min(datapath, 256)
    lanes = datapath // 32
    fma_units = 2 if "fma" in flags or "avx512f" in flags else 1
    flops_per_cycle = lanes * 2 * fma_units
    measured = measure_cpu(cores, avx512=isa_bits == 512) if measure and "fma" in flags else None
    if measured:
        clock_note = ("clock %.2f GHz measured with %d busy cores (bench/cpu_peak.c; /proc/cpuinfo "
                      "says %.2f); measured FMA throughput %.0f GFLOP/s"
                      % (measured["ghz"], measured["threads"], ghz, measured["gflops"]))
        ghz = measured["ghz"]
    else:
        clock_note = ("clock from /proc/cpuinfo (nominal: boost not counted; %s)"
                      % ("not measured" if measure else "no C compiler or FMA to measure it"))
    gflops = cores * ghz * flops_per_cycle
    explanation = ("FP32 peak %.0f GFLOP/s = %d cores x %.2f GHz x %d lanes (%s%s) x 2 (FMA) x %d "
                   "FMA units; %s family 0x%X; %s; cores as the OS shows them (SMT siblings would "
                   "halve it)"
                   % (gflops, cores, ghz, lanes, "AVX-512" if isa_bits == 512 else
                      "AVX2" if isa_bits == 256 else "SSE",
                      ", 256-bit datapath" if datapath < isa_bits else "", fma_units,
                      info.get("model name", "unknown CPU"), family, clock_note))
    return gflops, explanation
