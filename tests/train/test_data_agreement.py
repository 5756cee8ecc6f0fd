"""Before training, the .rec, its .idx and the stats must agree: a .rec cut at a record
boundary, a garbage .idx, an .idx cut to half, an unreadable .idx or stats of another
conversion stop the run in one line that names the files and the counts (exit 2), so a
wrong epoch length never reshapes the learning-rate schedule."""
import builtins
import json
import os
import shutil

import pytest

from mxcnn.data import recfile
from mxcnn.train import job as jobmod
from mxcnn.train import train_cifar
from tests.train.cli_helpers import base_args


def damaged_copy(records, folder, damage):
    """A copy of the fixture's data set in ``folder`` with ``damage`` done to the train split."""
    for path in records:
        stem = os.path.splitext(path)[0]
        for ext in (".rec", ".idx"):
            shutil.copy(stem + ext, folder)
    stats = os.path.join(os.path.dirname(records[0]), "toy_stats.json")
    shutil.copy(stats, folder)
    rec, idx = os.path.join(folder, "toy_train.rec"), os.path.join(folder, "toy_train.idx")
    lines = open(idx).readlines()
    if damage == "rec cut at a record boundary":
        with open(rec, "r+b") as handle:
            handle.truncate(int(lines[60].split()[1]))
    elif damage == "rec cut, no idx":
        with open(rec, "r+b") as handle:
            handle.truncate(int(lines[60].split()[1]))
        os.remove(idx)
    elif damage == "garbage idx":
        open(idx, "w").write("hello world\n" * 7 + "x\n")
    elif damage == "idx cut to half":
        open(idx, "w").writelines(lines[:48])
    elif damage == "stats of another conversion":
        data = json.load(open(os.path.join(folder, "toy_stats.json")))
        data["num_train"] = 120
        json.dump(data, open(os.path.join(folder, "toy_stats.json"), "w"))
    return rec, os.path.join(folder, "toy_val.rec")


CASES = [
    ("rec cut at a record boundary", "{idx} lists 96 records but {rec} holds 60"),
    ("rec cut, no idx", "{rec} holds 60 records but {stats} says num_train=96"),
    ("garbage idx", "{idx}: line 1 is not 'key<TAB>byte offset': the index is damaged ({rec} holds "
                    "96 records)"),
    ("idx cut to half", "{idx} lists 48 records but {rec} holds 96"),
    ("stats of another conversion", "{rec} holds 96 records but {stats} says num_train=120"),
]


RUNS = [(damage, fragment, with_stats) for damage, fragment in CASES
        for with_stats in (True, False) if with_stats or "{stats}" not in fragment]


@pytest.mark.parametrize("damage,fragment,with_stats", RUNS,
                         ids=["%s, %s" % (r[0], "stats" if r[2] else "no stats") for r in RUNS])
def test_disagreeing_data_is_one_line_exit_2(records, tmp_path, capsys, damage, fragment,
                                             with_stats):
    data = tmp_path / "data"
    data.mkdir()
    rec, val = damaged_copy(records, str(data), damage)
    if not with_stats:
        os.remove(str(data / "toy_stats.json"))
    prefix = str(tmp_path / "run" / "m")
    code = train_cifar.main(base_args((rec, val), prefix, "--lr-scheduler", "cosine"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    names = dict(rec=rec, idx=rec[:-4] + ".idx", stats=str(data / "toy_stats.json"))
    assert lines[0].startswith("train_cifar.py: error: " + fragment.format(**names)), lines[0]
    assert not os.path.exists(str(tmp_path / "run"))  # refused before anything was written


def test_an_unreadable_idx_is_one_line(records, tmp_path, capsys, monkeypatch):
    rec, val = damaged_copy(records, str(tmp_path), "none")
    idx = rec[:-4] + ".idx"
    os.chmod(idx, 0)
    if os.geteuid() == 0:  # root reads a mode-000 file: refuse it as the kernel would a user
        real_open = builtins.open

        def user_open(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and os.fspath(path) == idx:
                raise PermissionError(13, "Permission denied", idx)
            return real_open(path, *args, **kwargs)
        monkeypatch.setattr(builtins, "open", user_open)
    code = train_cifar.main(base_args((rec, val), str(tmp_path / "run" / "m")))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == ("train_cifar.py: error: cannot read index file %s (Permission denied); "
                           "check its permissions, or convert the data again" % idx)


def test_the_epoch_length_is_the_records_in_the_rec(records, tmp_path):
    """What the schedule counts with: the .rec's own records, whatever its .idx says."""
    rec, val = damaged_copy(records, str(tmp_path), "idx cut to half")
    os.remove(str(tmp_path / "toy_stats.json"))
    args = train_cifar.build_parser().parse_args(base_args((rec, val), str(tmp_path / "m")))
    job = jobmod.Job(args)
    job.train_rec, job.stats = rec, None
    assert jobmod.count_examples(job) == recfile.count_records(rec) == 96
