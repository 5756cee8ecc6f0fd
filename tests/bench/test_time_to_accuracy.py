"""bench/time_to_accuracy.py's bookkeeping on made-up epoch records (no training here)."""
import argparse
import json

import pytest
import time_to_accuracy as tta_bench


def result(name, accuracies, epoch_s=100.0, val_s=10.0, startup=5.0):
    records, wall = [], startup
    for i, acc in enumerate(accuracies):
        wall += epoch_s + val_s
        records.append({"epoch": i + 1, "val_error": 1 - acc, "accuracy": acc, "time": epoch_s,
                        "val_time": val_s, "wall": wall})
    return tta_bench.summarise({"name": name, "records": records, "wall": wall + 1,
                                "command": [], "returncode": 0})


def test_first_epoch_at_each_threshold_in_both_clocks():
    r = result("fast", [0.70, 0.86, 0.84, 0.905, 0.91])
    assert r["reached"]["80%"]["epoch"] == 2 and r["reached"]["85%"]["epoch"] == 2
    assert r["reached"]["88%"]["epoch"] == 4 and r["reached"]["92%"] is None
    # wall: start-up + 4 x (train + eval); training clock: 4 x train + one evaluation
    assert r["reached"]["90%"]["wall"] == 5 + 4 * 110 and r["reached"]["90%"]["train_clock"] == 410
    assert r["final_accuracy"] == 0.91 and r["best_accuracy"] == 0.91


def test_table_and_peer_ratio():
    fast, peer = result("fast", [0.85, 0.93], epoch_s=50), result("torch", [0.80, 0.90])
    text = tta_bench.table([fast, peer], "test CPU")
    assert "test CPU" in text and text.count("\n") == 4 and "93.00%" in text
    ratio = tta_bench.peer_ratio([fast, peer])
    # the peer's 90% at 225 s of wall clock; fast has 93% at its 2nd epoch: 5 + 2 x 60 = 125 s
    assert "0.56x" in ratio


def test_both_runs_take_the_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(tta_bench, "export_pixels", lambda work: "pixels.npz")
    args = argparse.Namespace(epochs=None, fast_args=[], reference_epochs=10, seed=7)
    for name in tta_bench.RUNS:
        argv, _ = tta_bench.commands(name, str(tmp_path), args)
        assert argv[argv.index("--seed") + 1] == "7", (name, argv)
        assert ("--dtype" in argv) == name.endswith("_bf16"), (name, argv)


def test_each_recipe_runs_its_preset_and_its_peer_the_same_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(tta_bench, "export_pixels", lambda work: "pixels.npz")
    args = argparse.Namespace(epochs=None, fast_args=[], reference_epochs=10, seed=0)
    for ours, peers in (("fast", ("torch", "torch_bf16")), ("fast92", ("torch92", "torch92_bf16"))):
        argv, _ = tta_bench.commands(ours, str(tmp_path), args)
        assert argv[argv.index("--preset") + 1] == ours
        for peer in peers:
            argv, _ = tta_bench.commands(peer, str(tmp_path), args)
            assert argv[argv.index("--recipe") + 1] == tta_bench.RECIPES[ours], argv


def test_each_peer_configuration_gets_its_ratio_fastest_first():
    fast = result("fast", [0.85, 0.93], epoch_s=50)
    peers = [result("torch", [0.80, 0.90]), result("torch_bf16", [0.80, 0.91], epoch_s=60)]
    lines = tta_bench.peer_ratio([fast] + peers).splitlines()
    # bf16 peer: 91% at 5 + 2 x 70 = 145 s (+1 s end); fast has 93% at 125 s
    assert lines[0].startswith("torch_bf16 peer: 91.00%") and "0.86x" in lines[0]
    assert lines[1].startswith("torch peer: 90.00%")
    assert tta_bench.default_runs({"avx2"}) == ["fast", "torch", "resnet20"]
    assert tta_bench.default_runs({"avx512_bf16"}) == ["fast", "torch", "torch_bf16", "resnet20"]


def test_peers_are_compared_with_their_own_recipe():
    runs = [result("fast", [0.90, 0.91]), result("torch", [0.89, 0.905]),
            result("fast92", [0.91, 0.925], epoch_s=200), result("torch92", [0.90, 0.921], epoch_s=250)]
    lines = tta_bench.peer_ratio(runs).splitlines()
    assert lines[0].startswith("torch peer: 90.50%") and "fast reaches it" in lines[0]
    # torch92: 92.1% at 5 + 2 x 260 = 525 s (+1 s end); fast92 has 92.5% at 5 + 2 x 210 = 425 s
    assert lines[1].startswith("torch92 peer: 92.10%") and "fast92 reaches it" in lines[1]
    assert "0.81x" in lines[1]
    assert tta_bench.peer_ratio([result("torch92", [0.9])]) is None


def test_report_joins_runs_saved_by_separate_invocations(tmp_path, capsys):
    for folder, run in (("ours", result("fast92", [0.85, 0.92], epoch_s=50)),
                        ("peer", result("torch92", [0.80, 0.91]))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "results.json").write_text(
            json.dumps({"cpu": "CPU " + folder, "runs": [run]}))
    folders = ",".join(str(tmp_path / f) for f in ("ours", "peer"))
    assert tta_bench.main(["--report", folders]) == 0
    text = capsys.readouterr().out
    assert "CPU ours" in text and "CPU peer" in text and "92.00%" in text
    assert "torch92 peer: 91.00% in" in text and "fast92 reaches it in" in text
    with pytest.raises(SystemExit, match="cannot read"):
        tta_bench.main(["--report", str(tmp_path / "missing")])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text('{"table": []}')
    with pytest.raises(SystemExit, match="cannot read .*KeyError"):
        tta_bench.main(["--report", str(tmp_path / "other")])
