"""Reading CIFAR-10/100 and class-per-folder image sets from any of the forms users have.

Accepted sources (the kind is detected from the contents, not the name):

* the official archives ``cifar-10-python.tar.gz``, ``cifar-10-binary.tar.gz``,
  ``cifar-100-python.tar.gz``, ``cifar-100-binary.tar.gz`` (Krizhevsky 2009), read member
  by member without extracting, or the folders they extract to;
* a class-per-folder tree ``train/<class>/*`` + ``test/<class>/*`` (``val/`` also accepted)
  of images (PNG, JPEG, BMP, TIFF, WebP, PPM, JPEG 2000, GIF), as a folder or a
  .tar/.tar.gz/.tgz/.zip of one (optionally under one or two top folders).  Archives are
  read in memory, never extracted, after every member passed the checks in :mod:`.safety`.
  Images are decoded by :mod:`.images`: bounded in pixels before decoding, and a truncated
  or corrupt image is refused (or, with ``skip_bad``, left out and listed).

:func:`load_source` returns a :class:`Dataset` with RGB uint8 (N, H, W, 3) arrays.
"""
import collections
import os
import posixpath
import tarfile
import zipfile
import zlib

import numpy as np

from mxcnn.data.errors import DataError
from mxcnn.data.images import MAX_IMAGE_PIXELS, decode_image
from mxcnn.data.safety import load_pickle, tar_members, zip_members

__all__ = ["Split", "Dataset", "load_source", "IMAGE_EXTENSIONS"]

Split = collections.namedtuple("Split", "images labels names")
Split.__doc__ = "images: uint8 (N, H, W, 3) RGB; labels: int64 (N,); names: N strings for the .lst"


class Dataset(collections.namedtuple("Dataset", "kind classes train val skipped",
                                     defaults=((),))):
    """``kind`` describes the source format; ``classes`` lists names in label order;
    ``skipped``: ``{"file", "reason"}`` dicts of the images left out as bad (``skip_bad``)."""


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pbm", ".pnm", ".jp2", ".gif")

# Official layouts: marker file -> (kind, dataset, train files, test file, meta files).
_CIFAR_PIXELS = 3 * 32 * 32
_LAYOUTS = {
    "data_batch_1": ("cifar-10 python", "cifar10",
                     ["data_batch_%d" % i for i in range(1, 6)], "test_batch", ["batches.meta"]),
    "data_batch_1.bin": ("cifar-10 binary", "cifar10",
                         ["data_batch_%d.bin" % i for i in range(1, 6)], "test_batch.bin",
                         ["batches.meta.txt"]),
    "train.bin": ("cifar-100 binary", "cifar100", ["train.bin"], "test.bin",
                  ["fine_label_names.txt", "coarse_label_names.txt"]),
    "train": ("cifar-100 python", "cifar100", ["train"], "test", ["meta"]),
}


def _raise(exc):  # os.walk's onerror: an unreadable folder is an error, not an empty one
    raise exc


class _Files:
    """Read-only access to the files of a folder, or of a tar/zip archive without extracting
    it (every member checked by :mod:`.safety` first).  ``names``: sorted relative posix file
    paths; ``folders``: every folder path, including the implied parents of files."""

    def __init__(self, source):
        self.source = source
        self._tar = self._zip = None
        folders = set()
        try:
            if os.path.isdir(source):
                names = []
                for dirpath, dirnames, filenames in os.walk(source, onerror=_raise):
                    dirnames.sort()
                    rel = os.path.relpath(dirpath, source).replace(os.sep, "/")
                    rel = "" if rel == "." else rel + "/"
                    folders.update(rel + d for d in dirnames)
                    names += [rel + f for f in filenames]
                self._members = None
            elif zipfile.is_zipfile(source):
                self._zip = zipfile.ZipFile(source)
                self._members, folders = zip_members(source, self._zip)
                names = list(self._members)
            else:
                self._tar = tarfile.open(source)
                self._members, folders = tar_members(source, self._tar)
                names = list(self._members)
        except OSError as exc:  # a folder or file we may not read: not a damaged archive
            self.close()
            if not isinstance(exc, PermissionError) and not os.path.isdir(source):
                raise DataError("%s: cannot read the archive (%s); it is truncated or corrupt, "
                                "download it again" % (source, exc)) from None
            raise DataError("cannot read %s (%s); check that you may read it"
                            % (exc.filename or source, exc.strerror or exc)) from None
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            self.close()
            raise DataError("%s: cannot read the archive (%s); it is truncated or corrupt, "
                            "download it again" % (source, exc)) from None
        for name in names:
            parent = posixpath.dirname(name)
            while parent and parent not in folders:
                folders.add(parent)
                parent = posixpath.dirname(parent)
        self.names = sorted(names)
        self.folders = folders
        self.archive = self._members is not None

    def where(self, name):
        return "%s:%s" % (self.source, name) if self.archive else os.path.join(self.source, name)

    def read(self, name):
        return self.read_many([name])[name]

    def read_many(self, names):
        """``{name: bytes}``; archive members are read in archive order (one pass over a
        compressed tar)."""
        wanted = set(names)
        out = {}
        name = None
        try:
            if self._tar is not None:
                for name, member in self._members.items():  # insertion = archive order
                    if name in wanted:
                        out[name] = self._tar.extractfile(member).read()
            elif self._zip is not None:
                for name in names:
                    out[name] = self._zip.read(self._members[name])
            else:
                for name in names:
                    with open(os.path.join(self.source, name), "rb") as f:
                        out[name] = f.read()
        except PermissionError as exc:
            raise DataError("cannot read %s (%s); check that you may read it"
                            % (self.where(name), exc.strerror)) from None
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError,
                KeyError) as exc:
            raise DataError("%s: cannot read (%s); the archive or file is truncated or corrupt"
                            % (self.where(name), exc)) from None
        missing = wanted - set(out)
        if missing:
            raise DataError("%s: cannot read %s" % (self.source, sorted(missing)[0]))
        return out

    def close(self):
        for handle in (self._tar, self._zip):
            if handle is not None:
                handle.close()


def _find_official(files):
    """``(layout, folder)`` of an official CIFAR layout among ``files.names``, else None."""
    by_folder = collections.defaultdict(set)
    for name in files.names:
        folder, base = posixpath.split(name)
        by_folder[folder].add(base)
    for marker, layout in _LAYOUTS.items():
        for folder, bases in sorted(by_folder.items()):
            if marker in bases and (marker != "train" or "meta" in bases):
                return layout, folder
    return None


def _labels_checked(labels, count, num_classes, where):
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != count:
        raise DataError("%s: %d labels for %d images; the file is corrupt, download it again"
                        % (where, labels.shape[0], count))
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError("%s: label %d outside 0..%d; the file is corrupt or of another data set"
                        % (where, labels.max() if labels.max() >= num_classes else labels.min(),
                           num_classes - 1))
    return labels


def _to_images(flat):
    """(N, 3072) R-plane/G-plane/B-plane rows -> (N, 32, 32, 3) RGB."""
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _read_python_batch(files, name, label_key, num_classes):
    where = files.where(name)
    batch = load_pickle(files.read(name), where)
    if not isinstance(batch, dict):
        raise DataError("%s: expected a dict of arrays, found %s" % (where, type(batch).__name__))
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(label_key.encode(), batch.get(label_key))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _CIFAR_PIXELS or labels is None:
        raise DataError("%s: not a CIFAR batch (needs 'data' uint8 (N, 3072) and %r)"
                        % (where, label_key))
    labels = _labels_checked(labels, data.shape[0], num_classes, where)
    filenames = batch.get(b"filenames", batch.get("filenames"))
    base = posixpath.basename(name)
    if isinstance(filenames, (list, tuple)) and len(filenames) == data.shape[0]:
        names = ["%s/%s" % (base, f.decode("utf-8", "replace") if isinstance(f, bytes) else f)
                 for f in filenames]
    else:
        names = ["%s/%05d" % (base, i) for i in range(data.shape[0])]
    return Split(_to_images(data), labels, names)


def _read_binary_batch(files, name, label_bytes, label_pos, num_classes):
    where = files.where(name)
    blob = np.frombuffer(files.read(name), np.uint8)
    row = label_bytes + _CIFAR_PIXELS
    if blob.size == 0 or blob.size % row:
        raise DataError("%s: %d bytes is not a whole number of %d-byte records; the file is "
                        "truncated, download it again" % (where, blob.size, row))
    rows = blob.reshape(-1, row)
    labels = _labels_checked(rows[:, label_pos], rows.shape[0], num_classes, where)
    base = posixpath.basename(name)
    return Split(_to_images(rows[:, label_bytes:]), labels,
                 ["%s/%05d" % (base, i) for i in range(rows.shape[0])])


def _text_names(files, name):
    text = files.read(name).decode("utf-8", "replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _concat(splits):
    return Split(np.concatenate([s.images for s in splits]),
                 np.concatenate([s.labels for s in splits]),
                 [n for s in splits for n in s.names])


def _load_official(files, layout, folder, dataset, label_mode):
    kind, expected, train_files, test_file, meta_files = layout
    if dataset != expected:
        raise DataError("%s holds %s but --dataset is %s; pass --dataset %s"
                        % (files.source, kind, dataset, expected))
    join = (lambda n: posixpath.join(folder, n) if folder not in ("", ".") else n)
    for needed in train_files + [test_file] + meta_files:
        if join(needed) not in files.names:
            raise DataError("%s: %s is missing; the %s data set is incomplete, download it again"
                            % (files.source, join(needed), kind))
    if expected == "cifar10":
        if kind.endswith("python"):
            meta = load_pickle(files.read(join("batches.meta")), files.where(join("batches.meta")))
            classes = _decode_names(meta, "label_names", files.where(join("batches.meta")))
        else:
            classes = _text_names(files, join("batches.meta.txt"))
        if len(classes) != 10:
            raise DataError("%s: %d class names, CIFAR-10 has 10" % (files.where(join(meta_files[0])),
                                                                     len(classes)))
    else:
        key = "%s_label_names" % label_mode
        if kind.endswith("python"):
            meta = load_pickle(files.read(join("meta")), files.where(join("meta")))
            classes = _decode_names(meta, key, files.where(join("meta")))
        else:
            classes = _text_names(files, join("%s.txt" % key))
        wanted = 100 if label_mode == "fine" else 20
        if len(classes) != wanted:
            raise DataError("%s: %d %s class names, CIFAR-100 has %d"
                            % (files.source, len(classes), label_mode, wanted))
    num_classes = len(classes)

    def read(name):
        if kind == "cifar-10 python":
            return _read_python_batch(files, join(name), "labels", num_classes)
        if kind == "cifar-100 python":
            return _read_python_batch(files, join(name), "%s_labels" % label_mode, num_classes)
        if kind == "cifar-10 binary":
            return _read_binary_batch(files, join(name), 1, 0, num_classes)
        return _read_binary_batch(files, join(name), 2, 0 if label_mode == "coarse" else 1,
                                  num_classes)

    train = _concat([read(n) for n in train_files])
    val = read(test_file)
    return Dataset(kind, classes, train, val)


def _decode_names(meta, key, where):
    names = meta.get(key.encode(), meta.get(key)) if isinstance(meta, dict) else None
    if not isinstance(names, (list, tuple)):
        raise DataError("%s: no %r list; the meta file is corrupt, download the archive again"
                        % (where, key))
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


# ---------------------------------------------------------------------------- folder trees

_VAL_FOLDERS = ("test", "val")


def _tree_root(files, max_depth=2):
    """The folder (relative, '' for the top) holding ``train/`` and ``test/`` (or ``val/``):
    the top itself or a folder at most ``max_depth`` levels below it; None if there is none."""
    candidates = [""] + sorted(f for f in files.folders if f.count("/") < max_depth)
    for root in candidates:
        prefix = root + "/" if root else ""
        if prefix + "train" in files.folders and any(prefix + v in files.folders
                                                     for v in _VAL_FOLDERS):
            return root
    return None


def _tree_split(files, root, split):
    """``{class: [file names]}`` of ``<root>/<split>/<class>/*``; DataError on empty classes."""
    base = (root + "/" if root else "") + split
    shown = files.where(base)
    classes = sorted(f[len(base) + 1:] for f in files.folders
                     if posixpath.dirname(f) == base and not posixpath.basename(f).startswith("."))
    if not classes:
        raise DataError("%s has no class folders; expected %s/<class>/<image files>"
                        % (shown, split))
    by_class = {cls: [] for cls in classes}
    for name in files.names:
        parent, fname = posixpath.split(name)
        cls = parent[len(base) + 1:] if parent.startswith(base + "/") else None
        if cls in by_class and not fname.startswith(".") and fname.lower().endswith(IMAGE_EXTENSIONS):
            by_class[cls].append(name)
    for cls, names in by_class.items():
        if not names:
            raise DataError("class folder %s has no images (%s); add images or remove the folder"
                            % (files.where(base + "/" + cls), " ".join(IMAGE_EXTENSIONS)))
    return by_class


def _decode(files, name, blob, max_pixels, skipped=None, shown=None):
    """uint8 (H, W, 3) RGB of one tree image.  A bad image (oversized, truncated, corrupt)
    raises DataError naming it, or with a ``skipped`` list is appended to it as
    ``{"file": shown, "reason": ...}`` and gives None."""
    try:
        return decode_image(blob, files.where(name), max_pixels)
    except DataError as err:
        if skipped is None:
            raise DataError("%s (or pass --skip-bad to leave out bad images)" % err) from None
        skipped.append({"file": shown or name, "reason": str(err)})
        return None


def _load_tree(files, root, progress=False, max_pixels=MAX_IMAGE_PIXELS, skip_bad=False):
    val_split = next(v for v in _VAL_FOLDERS
                     if (root + "/" if root else "") + v in files.folders)
    train_files = _tree_split(files, root, "train")
    val_files = _tree_split(files, root, val_split)
    classes = sorted(train_files)
    if sorted(val_files) != classes:
        differ = sorted(set(val_files) ^ set(classes))
        raise DataError("%s: train/ and %s/ have different class folders (%s); both need the "
                        "same classes" % (files.where(root or "."), val_split, ", ".join(differ)))
    first, skipped = {}, [] if skip_bad else None
    prefix_len = len(root) + 1 if root else 0

    def load(split, by_class):
        ordered = [(label, name) for label, cls in enumerate(classes) for name in by_class[cls]]
        blobs = files.read_many([name for _, name in ordered])
        images, kept = [], []
        bar = _progress(progress, len(ordered), "decoding %s/" % split)
        for label, name in ordered:
            img = _decode(files, name, blobs.pop(name), max_pixels, skipped, name[prefix_len:])
            bar.update(1)
            if img is None:
                continue
            if not first:
                first.update(hw=img.shape[:2], name=name)
            elif img.shape[:2] != first["hw"]:
                raise DataError("%s is %dx%d but %s is %dx%d; all images must have one size "
                                "(resize them first)" % (files.where(name), img.shape[1],
                                                         img.shape[0], files.where(first["name"]),
                                                         first["hw"][1], first["hw"][0]))
            images.append(img)
            kept.append((label, name))
        bar.close()
        if not images:
            raise DataError("%s/ has no decodable images; all were left out as bad"
                            % files.where(split if not root else root + "/" + split))
        return Split(np.stack(images), np.asarray([l for l, _ in kept], np.int64),
                     [name[prefix_len:] for _, name in kept])

    train, val = load("train", train_files), load(val_split, val_files)
    return Dataset("image folders", classes, train, val, tuple(skipped or ()))


def _progress(enabled, total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=None if enabled else True,
                leave=False)


# ---------------------------------------------------------------------------- entry point

def load_source(source: str | os.PathLike[str], dataset: str = "cifar10", label_mode: str = "fine",
                progress: bool = False, max_pixels: int = MAX_IMAGE_PIXELS,
                skip_bad: bool = False) -> Dataset:
    """Read ``source`` (see module docstring) into a :class:`Dataset`.

    ``dataset`` must match an official archive's contents (``cifar10``/``cifar100``);
    ``label_mode`` picks CIFAR-100's ``fine`` (100) or ``coarse`` (20) labels.  Images of a
    tree larger than ``max_pixels`` (width x height) are refused before decoding; with
    ``skip_bad`` an oversized, truncated or corrupt image is left out and listed in
    ``Dataset.skipped`` instead.  Raises :class:`DataError` naming the offending file for
    anything unusable.
    """
    if label_mode not in ("fine", "coarse"):
        raise DataError("label mode must be 'fine' or 'coarse', got %r" % (label_mode,))
    if label_mode == "coarse" and dataset != "cifar100":
        raise DataError("coarse labels exist only for CIFAR-100; drop --label-mode coarse or "
                        "pass --dataset cifar100")
    if not os.path.exists(source):
        raise DataError("source %s does not exist; pass an official CIFAR archive, its extracted "
                        "folder or a train/<class>/ + test/<class>/ image tree" % source)
    if os.path.isfile(source) and not (tarfile.is_tarfile(source) or zipfile.is_zipfile(source)):
        raise DataError("%s is not a recognised source (not a tar or zip archive); pass an "
                        "official CIFAR archive, its extracted folder or an image tree" % source)
    files = _Files(source)
    try:
        found = _find_official(files)
        if found is not None:
            return _load_official(files, found[0], found[1], dataset, label_mode)
        root = _tree_root(files)
        if root is None:
            raise DataError("%s is not a recognised source: no official CIFAR files "
                            "(data_batch_1, data_batch_1.bin, train + meta, train.bin) and no "
                            "train/<class>/ + test/<class>/ image folders" % source)
        return _load_tree(files, root, progress, max_pixels, skip_bad)
    finally:
        files.close()
