"""bench/_common: the FP32 and BF16 peaks are the throughputs bench/cpu_peak.c measures.

No test here depends on one microarchitecture's timing: a measured throughput only has to lie
within lanes x FLOPs per lane x [1, 2] pipes x [0.5, 6] GHz per core, which every x86 core
this project meets satisfies and a broken measurement (a loop the compiler removed, a
miscounted FLOP, the wrong vector width) does not.  bench/cpu_peak.c counts the thread's CPU
time, so other processes sharing the core do not lower the figure.
"""
import os
import shutil

import _common
import pytest

needs_cc = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
#: Plausible per-core clock range (GHz) and vector pipes per core.
GHZ = (0.5, 6.0)
PIPES = (1, 2)
#: vdpbf16ps issued per cycle and core: from half a pipe (Sapphire Rapids) to two (Zen 5).
BF16_PIPES = (0.5, 2)


def _flags():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def _bounds(flops_per_cycle_per_pipe, threads):
    return (threads * flops_per_cycle_per_pipe * PIPES[0] * GHZ[0],
            threads * flops_per_cycle_per_pipe * PIPES[1] * GHZ[1])


@needs_cc
@pytest.mark.skipif("fma" not in _flags(), reason="needs an FMA CPU")
def test_measured_fma_throughput_is_plausible(tmp_path, monkeypatch):
    monkeypatch.setenv("MXCNN_CACHE_DIR", str(tmp_path))
    result = _common.measure_cpu(cores=1, iterations=5000000)
    assert result is not None
    assert result["threads"] == 1
    assert result["lanes"] == (16 if "avx512f" in _flags() else 8)
    low, high = _bounds(result["lanes"] * 2, 1)  # FMA: 2 FLOPs per lane
    assert low < result["gflops"] < high, (result, low, high)
    assert [name for name in os.listdir(os.path.join(str(tmp_path), "bench"))
            if name.startswith("cpu_peak-")], "the binary is cached"


@needs_cc
@pytest.mark.skipif("avx512_bf16" not in _flags(), reason="needs a CPU with avx512_bf16")
def test_measured_bf16_throughput_is_plausible(tmp_path, monkeypatch):
    monkeypatch.setenv("MXCNN_CACHE_DIR", str(tmp_path))
    result = _common.measure_cpu(cores=1, iterations=5000000)
    assert result is not None
    if result["bf16_gflops"] is None:
        pytest.skip("the C compiler has no -mavx512bf16")
    # vdpbf16ps: 16 FP32 lanes x 2 products x (mul + add).  Sapphire Rapids issues one every
    # other cycle (half its FP32 FMA rate: 212 GFLOP/s a core measured); Zen 5 issues two a
    # cycle (532 GFLOP/s a core, 1.9x its FMA rate): so 0.5 to 2 pipes
    flops = 16 * 2 * 2
    low, high = flops * BF16_PIPES[0] * GHZ[0], flops * BF16_PIPES[1] * GHZ[1]
    assert low < result["bf16_gflops"] < high, (result, low, high)


def test_measure_without_bf16_reports_none(tmp_path, monkeypatch):
    monkeypatch.setenv("MXCNN_CACHE_DIR", str(tmp_path))
    result = _common.measure_cpu(cores=1, bf16=False, iterations=100000)
    if result is None:
        pytest.skip("no C compiler or no FMA CPU")
    assert result["bf16_gflops"] is None and result["gflops"] > 0


def _fake_cpu(monkeypatch, flags="fpu sse avx avx2 fma", vendor="AuthenticAMD", family="25"):
    monkeypatch.setattr(_common, "_cpuinfo", lambda: {
        "flags": flags, "cpu MHz": "2000.0", "vendor_id": vendor, "cpu family": family,
        "model name": "test CPU"})


def test_peak_is_the_measured_throughput(monkeypatch):
    _fake_cpu(monkeypatch)
    monkeypatch.setattr(_common, "measure_cpu", lambda *a, **k: {
        "gflops": 190.0, "bf16_gflops": None, "lanes": 8, "threads": 2})
    gflops, note = _common.cpu_peak(cores=2)
    assert gflops == pytest.approx(190.0)
    assert "measured FMA throughput" in note and "test CPU" in note
    assert _common.cpu_peak(cores=2, dtype="bfloat16")[0] is None


def test_bf16_peak_is_the_measured_dot_product_throughput(monkeypatch):
    _fake_cpu(monkeypatch, flags="avx2 fma avx512f avx512_bf16", vendor="GenuineIntel", family="6")
    monkeypatch.setattr(_common, "measure_cpu", lambda *a, **k: {
        "gflops": 445.0, "bf16_gflops": 810.0, "lanes": 16, "threads": 2})
    gflops, note = _common.cpu_peak(cores=2, dtype="bfloat16")
    assert gflops == pytest.approx(810.0) and "vdpbf16ps" in note
    with pytest.raises(ValueError):
        _common.cpu_peak(cores=2, dtype="float16")


@pytest.mark.parametrize("flags, vendor, family, per_core_cycle", [
    ("avx avx2 fma", "AuthenticAMD", "25", 8 * 2 * 2),              # Zen 3: AVX2, 2 FMA pipes
    ("avx2 fma avx512f", "AuthenticAMD", "25", 8 * 2 * 2),          # Zen 4: 512-bit as 2 halves
    ("avx2 fma avx512f", "AuthenticAMD", "26", 16 * 2 * 2),         # Zen 5: full 512-bit
    ("avx2 fma avx512f", "GenuineIntel", "6", 16 * 2 * 2),          # Xeon with AVX-512
    ("sse sse2", "GenuineIntel", "6", 4 * 2 * 1),                   # no FMA: SSE, 1 unit
])
def test_nominal_peak_without_a_measurement(monkeypatch, flags, vendor, family, per_core_cycle):
    _fake_cpu(monkeypatch, flags, vendor, family)
    monkeypatch.setattr(_common, "measure_cpu", lambda *a, **k: None)
    gflops, note = _common.cpu_peak(cores=2)
    assert gflops == pytest.approx(2 * 2.0 * per_core_cycle)
    assert "nominal clock from /proc/cpuinfo" in note
    assert _common.cpu_peak(cores=2, measure=False)[0] == pytest.approx(gflops)
