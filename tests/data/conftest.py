"""Small CIFAR fixtures written by the tests themselves, in every official layout."""
import gzip
import io
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
PER_BATCH = 4  # images per official batch file: 5 train batches + 1 test batch


def cifar_arrays(n, num_classes, seed):
    """(images uint8 (n, 32, 32, 3) RGB, labels int64) with every label used when n allows."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) * 7 + seed) % num_classes
    return images, labels.astype(np.int64)


def planes(images):
    """(n, 32, 32, 3) RGB -> (n, 3072) rows: R plane, G plane, B plane (the archive layout)."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


class Fixture:
    """What a fixture archive holds: train/val images and labels, class names."""

    def __init__(self, path, classes, train, val):
        self.path, self.classes = path, classes
        (self.train_images, self.train_labels), (self.val_images, self.val_labels) = train, val


def _tar(path, files):
    """A .tar.gz of ``files``, byte for byte the same whenever it is made (gzip's header
    holds no time stamp), so that a source made twice is the same source."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def make_cifar10_python(folder, archive=True, mutate=None):
    """The python-version layout (pickled batches); ``mutate(name, batch)`` may damage one."""
    batches = [cifar_arrays(PER_BATCH, 10, seed) for seed in range(6)]
    files = {}
    for i, (images, labels) in enumerate(batches):
        name = "data_batch_%d" % (i + 1) if i < 5 else "test_batch"
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                 b"data": planes(images), b"filenames": [b"img_%d_%d.png" % (i, j)
                                                         for j in range(len(labels))]}
        if mutate:
            mutate(name, batch)
        files["cifar-10-batches-py/" + name] = pickle.dumps(batch, protocol=2)
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}, protocol=2)
    train = (np.concatenate([b[0] for b in batches[:5]]), np.concatenate([b[1] for b in batches[:5]]))
    if archive:
        path = _tar(os.path.join(folder, "cifar-10-python-small.tar.gz"), files)
    else:
        for name, blob in files.items():
            os.makedirs(os.path.join(folder, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(folder, name), "wb") as f:
                f.write(blob)
        path = os.path.join(folder, "cifar-10-batches-py")
    return Fixture(path, CIFAR10_NAMES, train, batches[5])


def make_cifar10_binary(folder):
    batches = [cifar_arrays(PER_BATCH, 10, seed) for seed in range(10, 16)]
    files = {}
    for i, (images, labels) in enumerate(batches):
        name = "data_batch_%d.bin" % (i + 1) if i < 5 else "test_batch.bin"
        rows = np.concatenate([labels[:, None].astype(np.uint8), planes(images)], axis=1)
        files["cifar-10-batches-bin/" + name] = rows.tobytes()
    files["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(CIFAR10_NAMES) + "\n\n").encode()
    train = (np.concatenate([b[0] for b in batches[:5]]), np.concatenate([b[1] for b in batches[:5]]))
    return Fixture(_tar(os.path.join(folder, "cifar-10-binary-small.tar.gz"), files),
                   CIFAR10_NAMES, train, batches[5])


FINE = ["fine%03d" % i for i in range(100)]
COARSE = ["coarse%02d" % i for i in range(20)]


def make_cifar100(folder, kind, label_mode):
    (train_images, train_fine), (val_images, val_fine) = cifar_arrays(12, 100, 3), cifar_arrays(6, 100, 4)
    train_coarse, val_coarse = train_fine % 20, val_fine % 20
    files = {}
    if kind == "python":
        for name, images, fine, coarse in (("train", train_images, train_fine, train_coarse),
                                           ("test", val_images, val_fine, val_coarse)):
            files["cifar-100-python/" + name] = pickle.dumps(
                {b"filenames": [b"x.png"] * len(fine), b"batch_label": b"b",
                 b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(),
                 b"data": planes(images)}, protocol=2)
        files["cifar-100-python/meta"] = pickle.dumps(
            {b"fine_label_names": [n.encode() for n in FINE],
             b"coarse_label_names": [n.encode() for n in COARSE]}, protocol=2)
    else:  # <1 coarse><1 fine><3072 pixels>
        for name, images, fine, coarse in (("train.bin", train_images, train_fine, train_coarse),
                                           ("test.bin", val_images, val_fine, val_coarse)):
            rows = np.concatenate([coarse[:, None].astype(np.uint8), fine[:, None].astype(np.uint8),
                                   planes(images)], axis=1)
            files["cifar-100-binary/" + name] = rows.tobytes()
        files["cifar-100-binary/fine_label_names.txt"] = "\n".join(FINE).encode()
        files["cifar-100-binary/coarse_label_names.txt"] = "\n".join(COARSE).encode()
    fine_mode = label_mode == "fine"
    return Fixture(_tar(os.path.join(folder, "cifar-100-%s-small.tar.gz" % kind), files),
                   FINE if fine_mode else COARSE,
                   (train_images, train_fine if fine_mode else train_coarse),
                   (val_images, val_fine if fine_mode else val_coarse))


def make_tree(folder, classes=("cat", "dog", "frog"), per_class=(5, 3), size=(32, 32),
              ext=".png", seed=0):
    """train/<class>/*.png + test/<class>/*.png under ``folder``; images in label order."""
    import cv2
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in zip(("train", "test"), per_class):
        images, labels = [], []
        for label, cls in enumerate(classes):
            os.makedirs(os.path.join(folder, split, cls), exist_ok=True)
            for j in range(count):
                img = rng.integers(0, 256, size + (3,), dtype=np.uint8)
                assert cv2.imwrite(os.path.join(folder, split, cls, "%03d%s" % (j, ext)),
                                   img[:, :, ::-1])
                images.append(img)
                labels.append(label)
        out[split] = (np.stack(images), np.array(labels))
    return Fixture(folder, list(classes), out["train"], out["test"])


def zip_tree(folder, path):
    with zipfile.ZipFile(path, "w") as zf:
        for dirpath, _, filenames in os.walk(folder):
            for name in filenames:
                full = os.path.join(dirpath, name)
                zf.write(full, os.path.join("top", os.path.relpath(full, folder)))
    return path


def read_records(path):
    """([RGB images of any size], [labels], [ids]) of every record, read with stock MXNet
    (indexed reader)."""
    import mxnet as mx
    record = mx.recordio.MXIndexedRecordIO(os.path.splitext(path)[0] + ".idx", path, "r")
    images, labels, ids = [], [], []
    for key in record.keys:
        header, img = mx.recordio.unpack_img(record.read_idx(key), -1)
        images.append(img[:, :, ::-1])
        labels.append(header.label)
        ids.append(header.id)
    record.close()
    return images, labels, ids


def read_rec(path):
    """(RGB images stacked, labels array, ids) of every record of one image size."""
    images, labels, ids = read_records(path)
    return np.stack(images), np.array(labels), ids


def snapshot(folder):
    """{relative path: bytes, or '-> target' for a link} of everything under ``folder``
    (hidden files included): equal snapshots mean nothing was changed, added or left."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


def visible(folder, name="cifar10"):
    """{member: bytes or None} of data set ``name`` as a reader of its file names sees it."""
    from mxcnn.data.recfile import dataset_names
    out = {}
    for member in dataset_names(name):
        try:
            with open(os.path.join(folder, member), "rb") as f:
                out[member] = f.read()
        except FileNotFoundError:
            out[member] = None
    return out


def flatten(folder):
    """Turn a data set's links into plain files and drop its hidden folder: the layout the
    converter wrote before its files became one unit (and what users may still have)."""
    import shutil
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if os.path.islink(path):
            with open(path, "rb") as f:
                blob = f.read()
            os.remove(path)
            with open(path, "wb") as f:
                f.write(blob)
    for entry in os.listdir(folder):
        if entry.endswith(".set"):
            shutil.rmtree(os.path.join(folder, entry))


@pytest.fixture
def shared_tmp():
    """A temporary folder that another user may enter (tmp_path may not be): for runs under
    :func:`as_nobody`."""
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix="mxcnn-perm-")
    os.chmod(path, 0o777)
    yield path
    for dirpath, dirnames, _ in os.walk(path):  # a test may have made folders unreadable
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def as_nobody():
    """A context manager running its block with the permissions of an ordinary user: root
    ignores file modes, so root switches its effective ids to nobody (65534) for the block."""
    import contextlib

    import mxnet  # noqa: F401  (imported before the ids change)

    @contextlib.contextmanager
    def block():
        if os.geteuid() != 0:
            yield
            return
        try:
            os.setegid(65534)
            os.seteuid(65534)
        except OSError as exc:
            os.setegid(0)
            pytest.skip("cannot drop root's permissions here (%s)" % exc)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)
    return block


@pytest.fixture
def out_dir(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return str(path)


@pytest.fixture(scope="session")
def fx():
    """These helpers (make_cifar10_python, make_tree, read_rec, ...) for the tests: test files
    cannot import conftest under --import-mode=importlib."""
    import sys
    return sys.modules[__name__]
