"""bench/inference.py's int8 cache: a cached int8 checkpoint is redone when what made it changed."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("bench_inference", os.path.join(ROOT, "bench", "inference.py"))
bench_inference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_inference)


def _touch(path, mtime):
    open(path, "wb").close()
    os.utime(path, (mtime, mtime))


def test_int8_cache_is_redone_when_the_checkpoint_or_the_code_is_newer(tmp_path, monkeypatch):
    code = tmp_path / "quantize.py"
    monkeypatch.setattr(bench_inference, "QUANTIZE_SOURCES", (str(code),))
    prefix, out = str(tmp_path / "m"), str(tmp_path / "m-int8")
    _touch(code, 1000)
    _touch(prefix + "-0003.params", 1000)
    assert bench_inference._stale(out, 3, prefix)             # never written
    _touch(out + "-0003.params", 2000)
    _touch(out + "-0003.json", 2000)                          # a complete checkpoint
    assert not bench_inference._stale(out, 3, prefix)
    assert bench_inference._stale(out, 4, prefix)             # another epoch
    _touch(code, 3000)
    assert bench_inference._stale(out, 3, prefix)             # quantization code changed
    _touch(code, 1000)
    _touch(prefix + "-0003.params", 3000)
    assert bench_inference._stale(out, 3, prefix)             # checkpoint retrained
