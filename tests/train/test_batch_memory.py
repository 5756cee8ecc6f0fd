"""A batch that cannot be allocated is one line naming the batch size and the memory it needs,
exit 2, no traceback: refused before MXNet allocates when the estimate alone says so, and
an allocation failure during training says the same."""
import os
import re

import mxnet as mx

from mxcnn.train import fit, train_cifar
from mxcnn.train import job as jobmod
from tests.train.cli_helpers import base_args


def error_lines(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if "error:" in line]


def test_an_impossible_batch_is_refused_before_allocation(records, tmp_path, capsys, monkeypatch):
    def no_bind(*args, **kwargs):
        raise AssertionError("MXNet was asked to bind")
    monkeypatch.setattr(fit, "fit", no_bind)
    argv = base_args(records, str(tmp_path / "run" / "m"))
    argv[argv.index("--batch-size") + 1] = "1000000000"
    assert train_cifar.main(argv) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1, lines
    match = re.match(r"train_cifar.py: error: --batch-size 1000000000 is too large: it needs about "
                     r"([\d.]+) TB for the activations of resnet-8 at 3x16x16, with [\d.]+ [KMGT]B "
                     r"of memory available; use a smaller --batch-size, at most about (\d+)$",
                     lines[0])
    assert match, lines[0]
    # ResNet-8 at 16x16: 0.27 MB of float32 outputs per image (MXNet's executor allocated 11 MB
    # for 64 images), so a billion images need some 150 TB: the estimate is of that order
    assert 50 < float(match.group(1)) < 500
    assert not os.path.exists(str(tmp_path / "run"))


def test_a_batch_that_fits_is_not_refused(records, tmp_path):
    args = train_cifar.build_parser().parse_args(base_args(records, str(tmp_path / "m")))
    job = jobmod.Job(args)
    job.contexts, job.image_shape = [mx.cpu()], (3, 16, 16)
    from mxcnn import symbols
    job.symbol = symbols.get_symbol("resnet", 4, 8, (3, 16, 16))
    for batch in (16, 1024):
        args.batch_size = batch
        jobmod._check_memory(job)  # no UsageError
    needed, available, _ = job.memory
    assert 0.1e9 < needed < 0.5e9 and available > needed  # 1024 images: about 0.17 GB


def test_an_allocation_failure_in_training_is_one_line(records, tmp_path, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise mx.base.MXNetError("Traceback (most recent call last):\n  File \"../src/storage/./"
                                 "cpu_device_storage.h\", line 74\nMXNetError: Failed to allocate "
                                 "CPU Memory")
    monkeypatch.setattr(fit, "fit", out_of_memory)
    assert train_cifar.main(base_args(records, str(tmp_path / "m"))) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(
        "train_cifar.py: error: --batch-size 16 failed to allocate: it needs about "), lines
    assert "for the activations of resnet-8 at 3x16x16" in lines[0]
