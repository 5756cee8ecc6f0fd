"""A .rec, its .idx and the stats must agree: records are counted from the .rec's own headers
(an .idx only says where to look), and a cut .rec, a garbage, cut or foreign .idx, an
unreadable .idx and stats of another conversion are each named in one line with the files
and their counts."""
import builtins
import json
import os
import struct

import mxnet as mx
import numpy as np
import pytest

from mxcnn.data import recfile
from mxcnn.data.errors import DataError

MAGIC = struct.pack("<I", recfile.RECORD_MAGIC)


def write_rec(folder, name="t_train", payloads=None, count=20):
    """A .rec + .idx of ``payloads`` (default: ``count`` records of 5-40 bytes)."""
    payloads = payloads or [bytes([i % 251]) * (5 + i % 36) for i in range(count)]
    rec, idx = os.path.join(folder, name + ".rec"), os.path.join(folder, name + ".idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for i, payload in enumerate(payloads):
        writer.write_idx(i, payload)
    writer.close()
    return rec, idx


def offsets_in(idx):
    return [int(line.split()[1]) for line in open(idx)]


def test_records_are_counted_from_the_rec_not_its_idx(tmp_path):
    rec, idx = write_rec(str(tmp_path))
    assert recfile.count_records(rec) == 20
    assert list(recfile.check_index(rec)) == offsets_in(idx)
    with open(rec, "r+b") as handle:  # cut at a record boundary: 12 of the 20 records left
        handle.truncate(offsets_in(idx)[12])
    assert recfile.count_records(rec) == 12
    with pytest.raises(DataError) as err:
        recfile.check_split(rec)
    assert str(err.value) == ("%s lists 20 records but %s holds 12: one of them is cut or from "
                              "another conversion; convert the data again" % (idx, rec))


@pytest.mark.parametrize("damage,message", [
    ("garbage", "{idx}: line 1 is not 'key<TAB>byte offset': the index is damaged ({rec} holds "
                "20 records)"),
    ("half", "{idx} lists 10 records but {rec} holds 20"),
    ("foreign", "{idx} does not index {rec} (20 records): it lists byte "),
    ("same key twice", "{idx} does not index {rec} (20 records): it lists a key twice"),
])
def test_a_damaged_idx_is_named_with_the_counts(tmp_path, damage, message):
    rec, idx = write_rec(str(tmp_path))
    lines = open(idx).readlines()
    if damage == "garbage":
        lines = ["hello world\n"] * 7 + ["x\n"]
    elif damage == "half":
        lines = lines[:10]
    elif damage == "foreign":  # as many entries, at the offsets of another file
        lines = ["%d\t%d\n" % (i, 8 * i) for i in range(20)]
    else:
        lines[3] = lines[2].split("\t")[0] + "\t" + lines[3].split("\t")[1]
    open(idx, "w").writelines(lines)
    assert recfile.count_records(rec) == 20  # the count never trusts the index
    with pytest.raises(DataError, match="convert the data again") as err:
        recfile.check_split(rec)
    assert message.format(idx=idx, rec=rec) in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unreadable_idx_is_one_line(tmp_path, monkeypatch):
    rec, idx = write_rec(str(tmp_path))
    os.chmod(idx, 0)
    if os.geteuid() == 0:  # root reads a mode-000 file: refuse it as the kernel would a user
        real_open = builtins.open

        def user_open(path, *args, **kwargs):
            if os.fspath(path) == idx:
                raise PermissionError(13, "Permission denied", idx)
            return real_open(path, *args, **kwargs)
        monkeypatch.setattr(builtins, "open", user_open)
    with pytest.raises(DataError) as err:
        recfile.check_split(rec)
    assert str(err.value) == ("cannot read index file %s (Permission denied); check its "
                              "permissions, or convert the data again" % idx)
    assert recfile.count_records(rec) == 20  # counting needs only the .rec


def test_stats_of_another_conversion_are_named(tmp_path):
    rec, _ = write_rec(str(tmp_path))
    stats = {"num_train": 25, "_source": str(tmp_path / "t_stats.json")}
    with pytest.raises(DataError) as err:
        recfile.check_split(rec, stats, "num_train")
    assert str(err.value).startswith("%s holds 20 records but %s says num_train=25"
                                     % (rec, stats["_source"]))
    assert recfile.check_split(rec, dict(stats, num_train=20), "num_train") == 20


def test_split_records_and_a_truncated_tail(tmp_path):
    """Payloads holding the magic word are written in parts (dmlc's continuation flags): they
    count once each, whether the .idx confirms the offsets or the headers are walked."""
    payloads = [b"abcd" + MAGIC + b"efgh" + MAGIC + b"ij", b"plain", MAGIC * 3, b"x" * 9]
    rec, idx = write_rec(str(tmp_path), payloads=payloads)
    assert os.path.getsize(rec) > sum(len(p) + 8 for p in payloads) + 8  # split: more headers
    assert recfile.count_records(rec) == 4
    assert list(recfile.check_index(rec)) == offsets_in(idx)
    os.remove(idx)
    assert list(recfile.record_offsets(rec)) == [offset for offset, _ in recfile.read_records(rec)]
    with open(rec, "r+b") as handle:
        handle.truncate(os.path.getsize(rec) - 5)  # the last record loses its end (3 of 5: padding)
    with pytest.raises(DataError, match="record at byte .* is truncated"):
        recfile.count_records(rec)


def test_the_idx_is_confirmed_without_walking(tmp_path, monkeypatch):
    """With a matching .idx the headers are checked in one numpy pass (the walk is the
    fallback for a disagreement): what keeps a 50k-record check fast."""
    rec, idx = write_rec(str(tmp_path), count=300)
    walks = []
    real_walk = recfile._walk_headers
    monkeypatch.setattr(recfile, "_walk_headers", lambda *a: walks.append(a[0]) or real_walk(*a))
    assert recfile.check_split(rec) == 300 and walks == []
    lines = open(idx).readlines()
    open(idx, "w").writelines(lines[:299])
    recfile._OFFSETS.clear()  # what another process would see: nothing read yet
    with pytest.raises(DataError, match="lists 299 records but .* holds 300"):
        recfile.check_split(rec)
    assert walks == [rec]


def test_training_data_checks_read_the_stats_as_written(tmp_path):
    """The stats that data/prepare_cifar.py writes (sizes and digests) are checked too: an
    .idx replaced by another of the same count is named through its digest."""
    rec, idx = write_rec(str(tmp_path), name="d_train")
    stats_path = str(tmp_path / "d_stats.json")
    stats = {"num_train": 20, "_source": stats_path,
             "file_sizes": {n: os.path.getsize(str(tmp_path / n)) for n in ("d_train.rec", "d_train.idx")},
             "file_digests": {n: recfile.ends_digest(str(tmp_path / n))
                              for n in ("d_train.rec", "d_train.idx")}}
    with open(stats_path, "w") as handle:
        json.dump(stats, handle)
    assert recfile.check_split(rec, stats, "num_train") == 20
    keys, offsets = np.arange(20)[::-1], offsets_in(idx)  # same size, keys reversed: another index
    open(idx, "w").writelines("%d\t%d\n" % (k, o) for k, o in zip(keys, offsets))
    with pytest.raises(DataError, match="d_train.idx has other contents than the stats file records"):
        recfile.check_split(rec, stats, "num_train")
