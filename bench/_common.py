"""Shared by the bench scripts (and importable by any interpreter: no MXNet, no torch).

* ``time_steps``: the one timing loop every framework's measurement goes through.
* ``RESULT_TAG``: a measuring subprocess prints its result as ``RESULT_TAG + json``.
* ``cpu_peak``: the FP32 (or BF16) peak of the cores this process may use: the FMA (or
  ``vdpbf16ps``) throughput measured with every core busy (``measure_cpu``,
  bench/cpu_peak.c) or, without a C compiler, cores x nominal clock x FP32 lanes x 2 x FMA
  units.
"""
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from mxcnn.common import atomic_write, usable_cores  # noqa: E402

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


def _nominal_cycle_flops(info, flags):
    """``(lanes, fma_units, isa label)``: FP32 lanes x FMA units of the nominal formula.

    Lanes: AVX-512 16, AVX2 8, else SSE 4, capped by the datapath: AMD before Zen 5 (family
    < 0x1A) executes 512-bit vectors as two 256-bit halves.  FMA units: 2 per core (Zen 2-5,
    Intel server cores since Skylake), 1 without FMA.
    """
    isa_bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    try:
        family = int(info.get("cpu family", "0"))
    except ValueError:
        family = 0
    halves = info.get("vendor_id") == "AuthenticAMD" and family < 0x1A
    datapath = min(isa_bits, 256) if halves else isa_bits
    label = ("AVX-512" if isa_bits == 512 else "AVX2" if isa_bits == 256 else "SSE") + (
        ", 256-bit datapath" if datapath < isa_bits else "")
    return datapath // 32, 2 if "fma" in flags or "avx512f" in flags else 1, label


def _build(source, flags, compiler):
    """Path of ``source`` compiled with ``flags`` (cached by content), or ``None`` if it fails."""
    with open(source, "rb") as handle:
        digest = hashlib.sha1(handle.read() + " ".join(flags).encode()).hexdigest()[:12]
    binary = os.path.join(_cache_dir(), "cpu_peak-" + digest)
    if os.path.exists(binary):
        return binary

    def build(tmp):  # atomic: a concurrent run sees no binary or the whole one
        subprocess.run([compiler] + flags + [source, "-o", tmp], capture_output=True,
                       timeout=120, check=True)
        os.chmod(tmp, 0o755)
    try:
        atomic_write(binary, build)
    except (OSError, subprocess.SubprocessError):  # CalledProcessError: flags not supported
        return None
    return binary


def measure_cpu(cores=None, avx512=None, bf16=None, iterations=100000000):
    """Measured FP32 FMA and BF16 dot-product throughput, one thread per core, all at once.

    bench/cpu_peak.c: 12 independent chains of ``vfmadd`` (8 or 16 lanes), and of
    ``vdpbf16ps`` where the CPU has ``avx512_bf16`` and the compiler ``-mavx512bf16``.
    Returns ``{"gflops", "bf16_gflops" (None when not measured), "lanes", "threads"}`` or
    ``None`` without a C compiler, an FMA CPU or a working build.  ``avx512``/``bf16``:
    default from /proc/cpuinfo.  Binaries are cached in ``$MXCNN_CACHE_DIR/bench`` (default
    ~/.cache/mxcnn/bench).
    """
    cores = cores or usable_cores()
    flags = set(_cpuinfo().get("flags", "").split())
    avx512 = "avx512f" in flags if avx512 is None else avx512
    bf16 = avx512 and ("avx512_bf16" in flags if bf16 is None else bool(bf16))
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    source = os.path.join(HERE, "cpu_peak.c")
    if not compiler or not os.path.exists(source) or "fma" not in flags:
        return None
    base = ["-O2", "-pthread", "-mavx2", "-mfma"]
    base += ["-mavx512f", "-DUSE_AVX512"] if avx512 else []
    binary = _build(source, base + ["-mavx512bf16", "-DUSE_BF16"], compiler) if bf16 else None
    bf16 = binary is not None
    binary = binary or _build(source, base, compiler)
    if binary is None:
        return None
    try:
        command = [binary, str(cores), str(int(iterations))] + (["bf16"] if bf16 else [])
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        result = json.loads(run.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return {"gflops": result["gflops"], "bf16_gflops": result.get("bf16_gflops"),
            "lanes": result["lanes"], "threads": result["threads"]}


def cpu_peak(cores=None, measure=True, dtype="float32"):
    """``(gflops, explanation)``: the arithmetic peak of the cores this process may use.

    float32: the measured FMA throughput (``measure_cpu``, every core busy, so the all-core
    vector clock is in it); without a C compiler, or with ``measure=False``, the nominal
    cores x /proc/cpuinfo clock x FP32 lanes x 2 (FMA) x FMA units (under a hypervisor the
    nominal clock, an underestimate when the cores boost).  bfloat16: the measured
    ``vdpbf16ps`` throughput, ``(None, why)`` where it cannot be measured.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError("dtype must be float32 or bfloat16, got %r" % (dtype,))
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = cores or usable_cores()
    cpu = "%s, %d cores as the OS shows them" % (info.get("model name", "unknown CPU"), cores)
    measured = measure_cpu(cores) if measure else None
    if dtype == "bfloat16":
        if measured and measured["bf16_gflops"]:
            return measured["bf16_gflops"], ("BF16 peak %.0f GFLOP/s = measured vdpbf16ps "
                                             "throughput (bench/cpu_peak.c, %d busy cores); %s"
                                             % (measured["bf16_gflops"], measured["threads"], cpu))
        return None, "no BF16 peak: %s" % ("not measured" if not measure else
                                           "needs avx512_bf16 and a compiler with -mavx512bf16")
    if measured:
        return measured["gflops"], ("FP32 peak %.0f GFLOP/s = measured FMA throughput "
                                    "(bench/cpu_peak.c, %d busy cores, %d lanes); %s"
                                    % (measured["gflops"], measured["threads"],
                                       measured["lanes"], cpu))
    try:
        ghz = float(info.get("cpu MHz", "0")) / 1000.0
    except ValueError:
        ghz = 0.0
    lanes, fma_units, label = _nominal_cycle_flops(info, flags)
    gflops = cores * ghz * lanes * 2 * fma_units
    return gflops, ("FP32 peak %.0f GFLOP/s = %d cores x %.2f GHz x %d lanes (%s) x 2 (FMA) x %d "
                    "FMA units, nominal clock from /proc/cpuinfo (%s: boost not counted); %s"
                    % (gflops, cores, ghz, lanes, label, fma_units,
                       "not measured" if not measure else "no C compiler or FMA to measure",
                       info.get("model name", "unknown CPU")))
