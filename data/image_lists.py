"""What data/im2rec.py packs: the images of a class-per-folder tree or of im2rec ``.lst`` files,
as :class:`~mxcnn.data.packing.Job` s by split, with the class names and a fingerprint.

* a tree: ``train/<class>/*`` + ``test/<class>/*`` (or ``val/<class>/``), a folder or a
  .tar/.tar.gz/.tgz/.zip of one (optionally under one or two top folders), every archive
  member checked by :mod:`mxcnn.data.safety` (read through :mod:`mxcnn.data.sources`);
* ``.lst`` files as MXNet's im2rec writes them (``index<TAB>label<TAB>path``), paths
  relative to a root folder; the index becomes the record's key.
"""

import collections
import hashlib
import os
import posixpath
from collections.abc import Iterable

from mxcnn.data.errors import DataError
from mxcnn.data.packing import Job
from mxcnn.data.prepare_cifar import fingerprint
from mxcnn.data.sources import _Files, _tree_root, _tree_split

__all__ = ["Listing", "list_images", "list_tree", "list_lsts", "read_lst", "lst_class_names"]


class Listing:
    """What to pack: ``splits`` ``{"train": [Job], "val": [Job]}``, ``classes`` (names in
    label order), ``kind`` and ``fingerprint`` of the input, ``files`` (the open tree or
    archive, None for .lst input)."""

    def __init__(self, splits, classes, kind, print_, files=None):
        self.splits, self.classes, self.kind = splits, classes, kind
        self.fingerprint, self.files = print_, files


def list_tree(source: str) -> Listing:
    """The jobs of a class-per-folder tree (folder or archive); DataError when it is none."""
    if not os.path.exists(source):
        raise DataError(
            "source %s does not exist; pass an image tree (train/<class>/ + "
            "test/<class>/) or --train-lst/--val-lst" % source
        )
    files = _Files(source)
    try:
        return _tree_listing(files, source)
    except BaseException:
        files.close()
        raise


def _tree_listing(files, source):
    root = _tree_root(files)
    if root is None:
        raise DataError(
            "%s has no train/<class>/ + test/<class>/ (or val/<class>/) image folders; "
            "arrange the images so, or list them in .lst files" % source
        )
    prefix = root + "/" if root else ""
    val = "test" if prefix + "test" in files.folders else "val"
    by_split = {"train": _tree_split(files, root, "train"), "val": _tree_split(files, root, val)}
    classes = sorted(by_split["train"])
    if sorted(by_split["val"]) != classes:
        differ = sorted(set(by_split["val"]) ^ set(classes))
        raise DataError(
            "%s: train/ and %s/ have different class folders (%s); both need the "
            "same classes" % (files.where(root or "."), val, ", ".join(differ))
        )
    splits = {}
    for split, by_class in by_split.items():
        names = [(label, n) for label, cls in enumerate(classes) for n in by_class[cls]]
        splits[split] = [
            Job(i, label, n[len(prefix):], files.where(n), n if files.archive else os.path.join(source, n))
            for i, (label, n) in enumerate(names)
        ]
    kind = "image archive" if files.archive else "image folders"
    return Listing(splits, classes, kind, fingerprint(source), files)


def list_lsts(train_lst: str, val_lst: str, root: str | None) -> Listing:
    """The jobs of two im2rec .lst files; classes named by their folders where they agree."""
    splits = {"train": read_lst(train_lst, root), "val": read_lst(val_lst, root)}
    num_classes = 1 + max(job.label for jobs in splits.values() for job in jobs)
    classes = lst_class_names(splits["train"] + splits["val"], num_classes)
    digest = hashlib.sha256()
    for path in (train_lst, val_lst):
        digest.update(fingerprint(path).encode())
    for job in splits["train"] + splits["val"]:
        try:
            st = os.stat(job.source)
        except OSError as err:
            raise DataError(
                "%s: cannot read %s (%s)" % (job.shown, job.source, err.strerror or err)
            ) from None
        digest.update(
            ("%s\0%d\0%d\n" % (job.source, st.st_size, st.st_mtime_ns)).encode("utf-8", "surrogateescape")
        )
    return Listing(splits, classes, "image lists", "lst-sha256:" + digest.hexdigest())


def list_images(source: str | None, train_lst: str | None, val_lst: str | None, root: str | None) -> Listing:
    """The :class:`Listing` of a tree ``source`` or of ``train_lst`` + ``val_lst``."""
    if source is not None and (train_lst or val_lst):
        raise DataError("give --source (an image tree) or --train-lst/--val-lst, not both")
    if source is not None:
        return list_tree(os.path.abspath(os.path.expanduser(source)))
    if not (train_lst and val_lst):
        raise DataError("give --source (an image tree) or both --train-lst and --val-lst")
    if root is not None and not os.path.isdir(root):
        raise DataError("--root %s is not a folder; give the folder the .lst paths start from" % root)
    return list_lsts(
        os.path.abspath(train_lst), os.path.abspath(val_lst), os.path.abspath(root) if root else None
    )


# ---------------------------------------------------------------------------- .lst files


def read_lst(path: str, root: str | None = None) -> list[Job]:
    """``[Job]`` of an im2rec ``.lst`` (``index<TAB>label<TAB>path``, paths relative to
    ``root``, default the list's folder).  DataError naming the line for a malformed one, a
    label that is no class number, a repeated index or a path escaping ``root``."""
    root = os.path.abspath(root or os.path.dirname(os.path.abspath(path)))
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as err:
        raise DataError("cannot read %s (%s); check the path" % (path, err.strerror or err)) from None
    except UnicodeDecodeError:
        raise DataError("%s is not a text .lst file (index<TAB>label<TAB>path lines)" % path) from None
    jobs, seen = [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, label, name = _lst_fields(path, number, line)
        if key in seen:
            raise DataError(
                "%s:%d: index %d repeats line %d; every image needs its own index"
                % (path, number, key, seen[key])
            )
        seen[key] = number
        jobs.append(
            Job(
                key,
                label,
                name,
                "%s (%s:%d)" % (name, os.path.basename(path), number),
                _lst_image_path(path, number, root, name),
            )
        )
    if not jobs:
        raise DataError("%s lists no images; expected index<TAB>label<TAB>path lines" % path)
    return jobs


def _lst_fields(path, number, line):
    """``(index, label, relative path)`` of one .lst line; DataError naming it otherwise."""
    parts = [p.strip() for p in line.split("\t")]
    where = "%s:%d" % (path, number)
    if len(parts) < 3:
        raise DataError("%s: %r is not index<TAB>label<TAB>path (tab-separated)" % (where, line))
    if len(parts) > 3:
        raise DataError(
            "%s: %d labels on one line; only one class label per image is supported" % (where, len(parts) - 2)
        )
    try:
        key, label = int(parts[0]), float(parts[1])
    except ValueError:
        raise DataError("%s: index %r and label %r must be numbers" % (where, parts[0], parts[1])) from None
    if key < 0 or label < 0 or label != int(label):
        raise DataError(
            "%s: index %d and label %g must be whole numbers >= 0 (classes count from 0)"
            % (where, key, label)
        )
    return key, int(label), parts[2]


def _lst_image_path(path, number, root, name):
    full = os.path.normpath(os.path.join(root, name))
    if os.path.isabs(name) or os.path.relpath(full, root).split(os.sep)[0] == os.pardir:
        raise DataError(
            "%s:%d: %s is outside the image root %s; list paths relative to --root"
            % (path, number, name, root)
        )
    return full


def lst_class_names(jobs: Iterable[Job], num_classes: int) -> list[str]:
    """Class names for labels 0..num_classes-1: the folder all of a label's images share
    (im2rec's --recursive lists one folder per class), else the label number."""
    folders = collections.defaultdict(set)
    for job in jobs:
        folders[job.label].add(posixpath.basename(posixpath.dirname(job.name.replace(os.sep, "/"))))
    names = []
    for label in range(num_classes):
        found = folders.get(label, set())
        names.append(found.pop() if len(found) == 1 and "" not in found else str(label))
    return names if len(set(names)) == len(names) else [str(label) for label in range(num_classes)]
