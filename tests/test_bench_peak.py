"""bench/_common: the FP32 peak uses the clock measured by bench/cpu_peak.c."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import _common  # noqa: E402

needs_cc = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")


def _has_fma():
    with open("/proc/cpuinfo") as handle:
        return " fma" in handle.read()


@needs_cc
@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo") or not _has_fma(), reason="needs an FMA CPU")
def test_measured_clock_and_fma_throughput_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("MXCNN_CACHE_DIR", str(tmp_path))
    result = _common.measure_cpu(cores=1, iterations=20000000)
    assert result is not None
    assert result["threads"] == 1
    assert 0.3 < result["ghz"] < 8.0
    # 8 AVX2 lanes x 2 FLOPs x 2 FMA pipes per cycle; a busy machine lowers both figures
    assert 0.25 * 32 * result["ghz"] < result["gflops"] < 1.5 * 32 * result["ghz"]
    assert [name for name in os.listdir(os.path.join(str(tmp_path), "bench"))
            if name.startswith("cpu_peak-")], "the binary is cached"


def test_peak_falls_back_to_the_nominal_clock(monkeypatch):
    monkeypatch.setattr(_common, "measure_cpu", lambda *a, **k: None)
    gflops, note = _common.cpu_peak(cores=2)
    assert "clock from /proc/cpuinfo" in note
    assert gflops >= 0


def test_peak_formula_uses_the_measured_clock(monkeypatch):
    monkeypatch.setattr(_common, "_cpuinfo", lambda: {
        "flags": "fpu sse avx avx2 fma", "cpu MHz": "2000.0", "vendor_id": "AuthenticAMD",
        "cpu family": "25", "model name": "test CPU"})
    monkeypatch.setattr(_common, "measure_cpu",
                        lambda *a, **k: {"ghz": 3.0, "gflops": 190.0, "threads": 2})
    gflops, note = _common.cpu_peak(cores=2)
    assert gflops == pytest.approx(2 * 3.0 * 8 * 2 * 2)
    assert "3.00 GHz measured" in note and "2.00" in note
    gflops, _ = _common.cpu_peak(cores=2, measure=False)
    assert gflops == pytest.approx(2 * 2.0 * 8 * 2 * 2)
