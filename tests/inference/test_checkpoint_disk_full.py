"""A checkpoint save that runs out of space (ENOSPC, or MXNet's "FileStream.Write incomplete")
is one line naming the folder and its free space; the previous epoch stays complete and
the half-written epoch and temporary files are removed."""
import errno
import os
import re

import mxnet as mx
import numpy as np
import pytest

from mxcnn.inference import checkpoint as ckpt


def wide_net(hidden=100_000):
    """data (N, 1) -> FC(hidden) -> FC(2): about ``hidden`` x 16 bytes of weights."""
    x = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=hidden, name="fc1")
    x = mx.sym.FullyConnected(x, num_hidden=2, name="fc2")
    sym = mx.sym.SoftmaxOutput(x, name="softmax")
    shapes, _, _ = sym.infer_shape(data=(1, 1))
    rs = np.random.RandomState(0)
    arg = {name: mx.nd.array(rs.rand(*shape)) for name, shape in zip(sym.list_arguments(), shapes)
           if name not in ("data", "softmax_label")}
    return sym, arg


def check_previous_epoch_kept(prefix, failed, message):
    folder = os.path.dirname(prefix)
    assert re.fullmatch(
        r"cannot save checkpoint %d under %s: the file system of %s is full \([\d.]+ (bytes|KB|MB|GB)"
        r" free\); its partial files were removed, the newest complete checkpoint is %s; free space "
        r"or choose another --model-prefix" % (failed, re.escape(prefix), re.escape(folder),
                                               re.escape(ckpt.checkpoint_paths(prefix, failed - 1)
                                                         ["params"])), message), message
    assert ckpt.latest_epoch(prefix) == failed - 1 and ckpt.damage(prefix, failed - 1) is None
    mx.model.load_checkpoint(prefix, failed - 1)
    assert ckpt.saved_epochs(prefix) == list(range(1, failed))  # nothing of the failed epoch
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


@pytest.mark.parametrize("where", ["params", "states"])
def test_a_write_that_runs_out_of_space_is_one_line(tmp_path, monkeypatch, where):
    prefix = str(tmp_path / "m")
    sym, arg = wide_net(hidden=1000)
    for epoch in (1, 2):
        ckpt.save_checkpoint(prefix, epoch, sym, arg, {}, None, {"epoch": epoch})
    real_save = mx.nd.save

    def save_part(path, arrays):  # what dmlc's stream does on a full disk: part, then the error
        real_save(path, arrays)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        raise mx.base.MXNetError("Check failed: std::fwrite(ptr, 1, size, fp_) == size: "
                                 "FileStream.Write incomplete")

    def states_enospc(path):
        with open(path, "wb") as handle:
            handle.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", path)

    if where == "params":
        monkeypatch.setattr(mx.nd, "save", save_part)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.save_checkpoint(prefix, 3, sym, arg, {}, states_enospc if where == "states" else None,
                             {"epoch": 3})
    check_previous_epoch_kept(prefix, 3, str(err.value))


def test_a_full_file_system(small_fs):
    """A real 3 MB tmpfs: epochs of 1.6 MB each, the second does not fit."""
    prefix = os.path.join(small_fs, "m")
    sym, arg = wide_net()
    ckpt.save_checkpoint(prefix, 1, sym, arg, {}, None, {"epoch": 1})
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.save_checkpoint(prefix, 2, sym, arg, {}, None, {"epoch": 2})
    check_previous_epoch_kept(prefix, 2, str(err.value))
