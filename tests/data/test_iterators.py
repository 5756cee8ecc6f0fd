"""The iterator contract the trainer codes against: shapes, labels, pad, determinism, shards."""
import collections
import json
import os

import numpy as np
import pytest

from mxcnn.data.epoch_iters import InMemoryIter
from mxcnn.data.errors import DataError
from mxcnn.data.iterators import SyntheticIter, get_rec_iters, part_range
from mxcnn.data.prepare_cifar import prepare

BATCH = 8


@pytest.fixture(scope="module")
def converted(tmp_path_factory, fx):
    """A 4-class tree (7 train + 3 val images per class, 32x32) converted to RecordIO."""
    root = tmp_path_factory.mktemp("iters")
    fixture = fx.make_tree(str(root / "tree"), classes=("a", "b", "c", "d"), per_class=(7, 3))
    out = str(root / "out")
    stats = prepare("cifar10", source=fixture.path, output_dir=out, name="toy", quiet=True,
                    log=lambda m: None)
    fixture.train_rec = os.path.join(out, "toy_train.rec")
    fixture.val_rec = os.path.join(out, "toy_val.rec")
    fixture.stats = stats
    fixture.out = out
    return fixture


def normalised(images, stats):
    return ((images.astype(np.float32) - np.float32(stats["mean"]))
            / np.float32(stats["std"])).transpose(0, 3, 1, 2)


def epoch(it, set_to=None):
    """(data, labels) of the real samples of one epoch, and the list of pads."""
    if set_to is not None:
        it.set_epoch(set_to)
    it.reset()
    data, labels, pads = [], [], []
    for batch in it:
        assert batch.data[0].shape == (it.batch_size, 3, 32, 32)
        assert batch.label[0].shape == (it.batch_size,)
        real = it.batch_size - batch.pad
        data.append(batch.data[0].asnumpy()[:real])
        labels.append(batch.label[0].asnumpy()[:real])
        pads.append(batch.pad)
    return np.concatenate(data), np.concatenate(labels), pads


@pytest.mark.parametrize("backend", ["memory", "native"])
def test_contract_shapes_labels_pad_and_normalisation(converted, backend):
    train, val = get_rec_iters(converted.train_rec, converted.val_rec, BATCH, backend=backend)
    assert train.backend == backend
    for it in (train, val):
        assert [(d.name, d.shape) for d in it.provide_data] == [("data", (BATCH, 3, 32, 32))]
        assert [(d.name, d.shape) for d in it.provide_label] == [("softmax_label", (BATCH,))]
    data, labels, pads = epoch(val)
    assert pads == [0] * (len(pads) - 1) + [BATCH - 12 % BATCH]  # 12 val images, batch 8
    np.testing.assert_array_equal(labels, converted.val_labels)
    np.testing.assert_allclose(data, normalised(converted.val_images, converted.stats), atol=1e-5)
    assert data.dtype == np.float32
    data, labels, pads = epoch(train)
    assert len(labels) == 28 and pads[-1] == 32 - 28
    assert np.bincount(labels.astype(int)).tolist() == [7, 7, 7, 7]


def _match_augmented(sample, images, stats, pad=4):
    """Which source image (and crop/flip) an augmented sample is, or None."""
    raw = sample.transpose(1, 2, 0) * np.float32(stats["std"]) + np.float32(stats["mean"])
    for img in images:
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0))).astype(np.float32)
        for y in range(2 * pad + 1):
            for x in range(2 * pad + 1):
                crop = padded[y:y + 32, x:x + 32]
                for flip in (False, True):
                    if np.abs((crop[:, ::-1] if flip else crop) - raw).max() < 1e-3:
                        return y, x, flip
    return None


@pytest.mark.parametrize("backend", ["memory", "native"])
def test_training_batches_are_padded_crops_and_flips(converted, backend):
    train, _ = get_rec_iters(converted.train_rec, None, BATCH, backend=backend, seed=3)
    data, labels, _ = epoch(train, 0)
    found = [_match_augmented(d, converted.train_images[converted.train_labels == l],
                              converted.stats) for d, l in zip(data[:10], labels[:10])]
    assert all(f is not None for f in found), found
    assert len(set(found)) > 3  # offsets and flips vary


def test_set_epoch_replays_exactly_and_epochs_differ(converted):
    kwargs = dict(backend="memory", seed=11)
    a, _ = get_rec_iters(converted.train_rec, None, BATCH, **kwargs)
    b, _ = get_rec_iters(converted.train_rec, None, BATCH, **kwargs)
    first = epoch(a, 5)
    epoch(b, 2)
    again = epoch(b, 5)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    other = epoch(a, 6)
    assert not np.array_equal(first[0], other[0])
    following = epoch(a)  # reset() without set_epoch moves on to epoch 7
    np.testing.assert_array_equal(following[0], epoch(b, 7)[0])
    c, _ = get_rec_iters(converted.train_rec, None, BATCH, backend="memory", seed=12)
    assert not np.array_equal(first[0], epoch(c, 5)[0])


def test_native_backend_is_deterministic_per_epoch(converted):
    a, _ = get_rec_iters(converted.train_rec, None, BATCH, backend="native", seed=4)
    b, _ = get_rec_iters(converted.train_rec, None, BATCH, backend="native", seed=4)
    np.testing.assert_array_equal(epoch(a, 1)[0], epoch(b, 1)[0])


@pytest.mark.parametrize("backend", ["memory", "native"])
def test_shards_cover_every_sample_exactly_once(converted, backend):
    parts, seen = 3, collections.Counter()
    for part in range(parts):
        it, _ = get_rec_iters(converted.train_rec, None, BATCH, augment=False, backend=backend,
                              num_parts=parts, part_index=part)
        start, stop = part_range(28, parts, part)
        for e in (0, 1):
            data, labels, _ = epoch(it, e)
            assert len(labels) == stop - start
            if e == 0:
                std, mean = np.float32(converted.stats["std"]), np.float32(converted.stats["mean"])
                got = sorted(np.rint(x.transpose(1, 2, 0) * std + mean).astype(np.uint8).tobytes()
                             for x in data)
                # the same record range in both backends
                assert got == sorted(x.tobytes() for x in converted.train_images[start:stop])
                seen.update(got)
    assert len(seen) == 28 and set(seen.values()) == {1}


def test_other_image_sizes_and_stats_by_path(fx, tmp_path):
    fixture = fx.make_tree(str(tmp_path / "tree"), classes=("x", "y"), per_class=(5, 2),
                           size=(40, 48))
    out = str(tmp_path / "out")
    prepare("cifar10", source=fixture.path, output_dir=out, name="big", quiet=True,
            log=lambda m: None)
    stats = os.path.join(out, "big_stats.json")
    for backend in ("memory", "native"):
        train, val = get_rec_iters(os.path.join(out, "big_train.rec"),
                                   os.path.join(out, "big_val.rec"), 4, image_shape=(3, 40, 48),
                                   stats=stats, backend=backend)
        batch = next(iter(train))
        assert batch.data[0].shape == (4, 3, 40, 48)
        data = next(iter(val)).data[0].asnumpy()
        np.testing.assert_allclose(data, normalised(fixture.val_images, json.load(open(stats))),
                                   atol=1e-4)


def test_missing_stats_warns_and_does_not_normalise(converted, tmp_path):
    rec = str(tmp_path / "plain.rec")
    for ext in ("rec", "idx"):
        with open(converted.train_rec[:-3] + ext, "rb") as f, open(rec[:-3] + ext, "wb") as g:
            g.write(f.read())
    with pytest.warns(UserWarning, match="NOT normalised"):
        it, _ = get_rec_iters(rec, None, BATCH, augment=False, shuffle=False)
    data = next(iter(it)).data[0].asnumpy()
    np.testing.assert_array_equal(data, converted.train_images[:BATCH].transpose(0, 3, 1, 2))


def test_bad_files_and_mismatched_stats_raise_one_clear_error(converted, tmp_path):
    with pytest.raises(DataError, match="nowhere_train.rec does not exist"):
        get_rec_iters(str(tmp_path / "nowhere_train.rec"), None, BATCH)
    blob = open(converted.train_rec, "rb").read()
    for name, damaged, words in (("cut", blob[:len(blob) - 1000], "truncated"),
                                 ("magic", b"\0" * 4 + blob[4:], "bad RecordIO magic"),
                                 ("image", blob[:60] + b"\0" * 200 + blob[260:], "decoded")):
        path = str(tmp_path / ("%s_train.rec" % name))
        open(path, "wb").write(damaged)
        with pytest.raises(DataError, match=words) as err:
            get_rec_iters(path, None, BATCH, stats=converted.stats, backend="memory")
        assert path in str(err.value)
    with pytest.raises(DataError, match="describes 4 classes but num_classes is 10"):
        get_rec_iters(converted.train_rec, None, BATCH, num_classes=10)
    with pytest.raises(DataError, match="has 28 records but .* num_train=50"):
        get_rec_iters(converted.train_rec, None, BATCH, stats=dict(converted.stats, num_train=50))
    with pytest.raises(DataError, match="label 3"):
        get_rec_iters(converted.train_rec, None, BATCH, backend="memory",
                      stats=dict(converted.stats, num_classes=3))
    bad_json = str(tmp_path / "bad_stats.json")
    open(bad_json, "w").write("{not json")
    with pytest.raises(DataError, match="bad_stats.json is not valid JSON"):
        get_rec_iters(converted.train_rec, None, BATCH, stats=bad_json)


def test_synthetic_iter():
    it = SyntheticIter(4, (3, 16, 16), num_classes=5, num_batches=3)
    batches = list(it)
    assert len(batches) == 3 and batches[0].data[0].shape == (4, 3, 16, 16)
    labels = batches[0].label[0].asnumpy()
    assert ((labels >= 0) & (labels < 5)).all() and all(b.pad == 0 for b in batches)
    it.reset()
    assert len(list(it)) == 3
    assert it.provide_data[0].shape == (4, 3, 16, 16)


@pytest.mark.parametrize("backend", ["auto", "native"])
def test_validation_only_for_scoring(converted, backend):
    train, val = get_rec_iters(None, converted.val_rec, BATCH, backend=backend)
    assert train is None
    data, labels, _ = epoch(val)  # stats found beside toy_val.rec
    np.testing.assert_array_equal(labels, converted.val_labels)
    np.testing.assert_allclose(data, normalised(converted.val_images, converted.stats), atol=1e-5)
    with pytest.raises(ValueError, match="data_train, data_val or both"):
        get_rec_iters(None, None, BATCH)


# ------------------------------------------------------------------ prefetch (GPU input path)

def _batches(it, epoch_index, stop_after=None):
    """Every batch of one epoch as (data, label, pad) numpy triples."""
    it.set_epoch(epoch_index)
    it.reset()
    out = []
    for batch in it:
        out.append((batch.data[0].asnumpy(), batch.label[0].asnumpy(), batch.pad))
        if stop_after is not None and len(out) == stop_after:
            break
    return out


def _prefetch_threads():
    import threading
    return [t for t in threading.enumerate() if t.name == "mxcnn-prefetch" and t.is_alive()]


def _same(a, b):
    assert len(a) == len(b)
    for (da, la, pa), (db, lb, pb) in zip(a, b):
        np.testing.assert_array_equal(da, db)
        np.testing.assert_array_equal(la, lb)
        assert pa == pb


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_gives_identical_batches(converted, depth):
    kwargs = dict(backend="memory", seed=7)
    plain, _ = get_rec_iters(converted.train_rec, None, BATCH, **kwargs)
    ahead, _ = get_rec_iters(converted.train_rec, None, BATCH, prefetch=depth, **kwargs)
    for e in (0, 1, 5):
        reference = _batches(plain, e)
        assert reference[-1][2] == 32 - 28  # the padded last batch is part of the check
        _same(_batches(ahead, e), reference)
    # a reset in the middle of an epoch replays it from its first batch, thread restarted
    _batches(ahead, 1, stop_after=2)
    _same(_batches(ahead, 1), _batches(plain, 1))
    _, val_plain = get_rec_iters(None, converted.val_rec, BATCH, backend="memory")
    _, val_ahead = get_rec_iters(None, converted.val_rec, BATCH, backend="memory", prefetch=2)
    _same(_batches(val_ahead, 0), _batches(val_plain, 0))
    ahead.close()
    assert not _prefetch_threads()


def test_prefetch_thread_errors_reach_the_consumer_and_threads_end(converted, monkeypatch):
    it, _ = get_rec_iters(converted.train_rec, None, BATCH, backend="memory", prefetch=2)
    calls = []
    original = type(it).assemble

    def failing(self, index):
        calls.append(len(index))
        if len(calls) == 2:
            raise OSError("disk went away")
        return original(self, index)

    monkeypatch.setattr(type(it), "assemble", failing)
    it.reset()
    next(it)
    with pytest.raises(OSError, match="disk went away"):
        next(it)
    monkeypatch.undo()
    del it  # an abandoned iterator leaves no thread behind
    import gc
    gc.collect()
    import time
    deadline = time.monotonic() + 5
    while _prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _prefetch_threads()


def test_pinned_memory_batches_are_equal(converted):
    import mxnet as mx
    plain, _ = get_rec_iters(converted.train_rec, None, BATCH, backend="memory", seed=2)
    pinned, _ = get_rec_iters(converted.train_rec, None, BATCH, backend="memory", seed=2,
                              prefetch=2, pin_memory=True)
    pinned.reset()
    batch = next(iter(pinned))
    assert batch.data[0].context == mx.cpu_pinned(0) and batch.label[0].context == mx.cpu_pinned(0)
    _same(_batches(pinned, 3), _batches(plain, 3))
    pinned.close()


def test_prefetch_must_not_be_negative(converted):
    with pytest.raises(ValueError, match="prefetch"):
        get_rec_iters(converted.train_rec, None, BATCH, backend="memory", prefetch=-1)


def _flip_iter(images, epoch, **kw):
    it = InMemoryIter(images, np.arange(len(images)), batch_size=len(images), augment=True,
                      shuffle=False, seed=3, data_shape=(3, 8, 8), **kw)
    it.set_epoch(epoch)
    it.reset()
    return it.next().data[0].asnumpy()


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    rs = np.random.RandomState(0)
    images = rs.randint(0, 256, (64, 8, 8, 3)).astype(np.uint8)
    e0, e1, e2, e3 = (_flip_iter(images, e, pad=0, rand_mirror="alternate") for e in range(4))
    plain = images.transpose(0, 3, 1, 2).astype(np.float32)
    flipped0 = np.array([not np.array_equal(a, b) for a, b in zip(e0, plain)])
    assert 16 < flipped0.sum() < 48                      # the first epoch's flips are random
    np.testing.assert_array_equal(e1, e0[:, :, :, ::-1])  # the next epoch: the other way
    np.testing.assert_array_equal(e2, e0)
    np.testing.assert_array_equal(e3, e1)
    random_flips = [_flip_iter(images, e, pad=0) for e in range(4)]
    assert not all(np.array_equal(b, a[:, :, :, ::-1]) for a, b in zip(random_flips, random_flips[1:]))


def test_reflect_padding_crops_the_reflected_image():
    rs = np.random.RandomState(1)
    images = rs.randint(1, 256, (32, 8, 8, 3)).astype(np.uint8)
    it = InMemoryIter(images, np.arange(32), batch_size=32, augment=True, pad=2,
                      rand_mirror=False, pad_mode="reflect", data_shape=(3, 8, 8))
    it.reset()
    got = it.next().data[0].asnumpy()
    padded = np.pad(images.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    for i, (y, x) in enumerate(zip(it._dy, it._dx)):
        np.testing.assert_array_equal(got[i], padded[i, :, y:y + 8, x:x + 8])
    assert (got > 0).all() and len(set(zip(it._dy, it._dx))) > 5  # no black border, real shifts
    with pytest.raises(ValueError, match="pad_mode"):
        InMemoryIter(images, np.arange(32), batch_size=32, pad_mode="edge", data_shape=(3, 8, 8))


def test_native_backend_refuses_what_only_the_memory_backend_has(converted):
    train_rec = converted.train_rec
    with pytest.raises(DataError, match="backend='memory'"):
        get_rec_iters(train_rec, None, 16, backend="native", rand_mirror="alternate")
    with pytest.raises(DataError, match="backend='memory'"):
        get_rec_iters(train_rec, None, 16, backend="native", pad_mode="reflect")
