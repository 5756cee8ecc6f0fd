"""Shared by the bench scripts (and importable by any interpreter: no MXNet, no torch).

* ``time_steps``: the one timing loop every framework's measurement goes through.
* ``RESULT_TAG``: a measuring subprocess prints its result as ``RESULT_TAG + json``.
* ``cpu_peak``: the FP32 peak of the cores this process may use, from /proc/cpuinfo.
"""
import math
import os
import statistics
import time

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


def cpu_peak(cores=None):
    """``(gflops, explanation)``: FP32 peak = cores x GHz x FP32 lanes x 2 (FMA) x FMA units.

    Lanes: AVX-512 16, AVX2 8, else SSE 4, capped by the datapath width: AMD before Zen 5
    (family < 0x1A) executes 512-bit vectors as two 256-bit halves.  FMA units: 2 per core
    (Zen 2-5 and Intel server cores since Skylake).  Clock: the "cpu MHz" of /proc/cpuinfo
    (under a hypervisor the nominal clock; boost is not counted).
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1)
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
    gflops = cores * ghz * flops_per_cycle
    explanation = ("FP32 peak %.0f GFLOP/s = %d cores x %.2f GHz x %d lanes (%s%s) x 2 (FMA) x %d "
                   "FMA units; %s family 0x%X; clock from /proc/cpuinfo, no boost; "
                   "cores as the OS shows them (SMT siblings would halve it)"
                   % (gflops, cores, ghz, lanes, "AVX-512" if isa_bits == 512 else
                      "AVX2" if isa_bits == 256 else "SSE",
                      ", 256-bit datapath" if datapath < isa_bits else "", fma_units,
                      info.get("model name", "unknown CPU"), family))
    return gflops, explanation
