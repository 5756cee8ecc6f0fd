"""bench/step_profile.py: one real profiled training step through its subprocess path.

A tiny batch keeps it to seconds; the point is that the script still builds its networks
through the shared bench helpers and parses oneDNN's verbose output into per-kind times.
"""

import pytest
import step_profile

from mxcnn.graph import fusion


@pytest.mark.skipif(not fusion.available(), reason="needs MXNet with oneDNN")
def test_profile_one_resnet20_step():
    step_s, times, flops, summary = step_profile.profile("resnet20", steps=1, fuse=True,
                                                         batch_size=4)
    assert step_s > 0
    conv = [kind for kind in times if kind.startswith("convolution")]
    assert conv and all(flops[kind] > 0 for kind in conv)
    assert summary["total_ms"] == pytest.approx(sum(times.values()), rel=1e-6)
