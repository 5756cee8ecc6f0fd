"""Training onto a file system that fills up: one line naming the folder and its free space,
exit 2, no traceback; every epoch saved before stays complete and loads, and nothing of the
epoch that did not fit is left behind."""
import os
import re

import mxnet as mx

from mxcnn.inference import checkpoint as ckpt
from mxcnn.train import train_cifar
from tests.train.cli_helpers import base_args


def test_a_full_disk_during_a_save(records, small_fs, capsys):
    prefix = os.path.join(small_fs, "m")  # ResNet-8 epochs of 0.6 MB: the 5th does not fit
    code = train_cifar.main(base_args(records, prefix, "--num-epochs", "20"))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1, err[-3000:]
    latest = ckpt.latest_epoch(prefix)
    assert latest and latest >= 2
    assert re.fullmatch(r"train_cifar.py: error: cannot save checkpoint %d under %s: the file system "
                        r"of %s is full \([\d.]+ (bytes|KB|MB)\ free\); its partial files were "
                        r"removed, the newest complete checkpoint is %s; free space or choose "
                        r"another --model-prefix" % (latest + 1, re.escape(prefix), re.escape(small_fs),
                                                     re.escape(ckpt.checkpoint_paths(prefix, latest)
                                                               ["params"])), lines[0]), lines[0]
    assert ckpt.saved_epochs(prefix) == list(range(1, latest + 1))
    for epoch in range(1, latest + 1):
        assert ckpt.damage(prefix, epoch) is None
        mx.model.load_checkpoint(prefix, epoch)
    assert not [n for n in os.listdir(small_fs) if n.endswith((".tmp", ".lock"))]
