"""bench/throughput.py: which networks each mode measures (no timing is checked here)."""
import json

import throughput


def test_knob_networks_are_measured_with_knobs_only(capsys):
    assert throughput.main(["--nets", "airbench95", "--configs", "ours"]) == 2
    assert "unknown net airbench95" in capsys.readouterr().err
    jobs = throughput.plan_knobs(["airbench95"], ["no_channel_pad"], 16, {"airbench95": 2}, 1)
    assert [knob for _, knob, _, _ in jobs] == ["defaults", "no_channel_pad"]
    spec = json.loads(jobs[1][2][-1])
    assert spec["options"] == {"rewrites": ["global_pool", "layout_barrier", "fusion"]}


def test_knob_networks_are_the_presets_networks():
    """airbench94 and airbench95 are --preset fast's and fast92's network (2.6x the MACs)."""
    fast, fast92 = (throughput.forward_macs(net) for net in ("airbench94", "airbench95"))
    assert 2.5 < fast92 / fast < 2.7
    assert set(throughput.KNOB_NETS).isdisjoint(throughput.NETS)
