"""Convert CIFAR-10/100 (or any train/<class>/ + test/<class>/ image tree) to RecordIO.

    python data/prepare_cifar.py --dataset cifar10                  # download + convert
    python data/prepare_cifar.py --dataset cifar100 --source cifar-100-binary.tar.gz
    python data/prepare_cifar.py --source my-images.tar.gz --name flowers --output-dir ~/data

Writes, in ``--output-dir`` (default ``~/.mxnet/datasets/<dataset>``, like GluonCV):
``NAME_train.rec/.idx/.lst``, ``NAME_val.rec/.idx/.lst`` (what ``mx.io.ImageRecordIter``,
``mx.recordio.MXIndexedRecordIO`` and im2rec read; images BGR via ``mx.recordio.pack_img``)
and ``NAME_stats.json`` (classes, counts, image shape, per-channel RGB mean/std of the
train split on the 0-255 scale).  PNG keeps every pixel exactly; JPEG is smaller but lossy.

The seven files are one unit (``common.FileSet``): each name is a link into
``.NAME.set/current/``, a new conversion is written beside the old one and switched in by
one rename, so a failed or killed run leaves the previous complete set, and readers check
the files against the sizes and digests in the stats.  An existing set is replaced only
with ``--force``; re-running with unchanged inputs does nothing; a source needs images of
at least 2 classes.  What a killed run left is removed by the next one.
"""
import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mxcnn import common
from mxcnn.data.errors import DataError
from mxcnn.data.images import MAX_IMAGE_PIXELS, check_max_pixels
from mxcnn.data.recfile import SplitWriter, dataset_names, ends_digest, set_problem
from mxcnn.data.sources import load_source

__all__ = ["main", "prepare", "DOWNLOADS", "channel_stats"]

#: dataset -> (official archive URL, its MD5) used when no --source is given.
DOWNLOADS = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85"),
}
#: MD5s of all official archives, checked whenever a source has one of these names.
KNOWN_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}
DOWNLOAD_TIMEOUT = 5  # seconds to connect: without network we fail at once
PNG_COMPRESSION = 3    # zlib level for PNG records: lossless either way, 3 is fast
STATS_VERSION = 1


def _md5(path):
    digest = hashlib.md5()
    with _reading(path):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _reading(path):
    """OSError while reading the source ``path`` -> DataError naming it."""
    try:
        yield
    except OSError as exc:
        raise DataError("cannot read %s (%s); check that it exists and that you may read it"
                        % (exc.filename or path, exc.strerror or exc)) from None


def download(dataset: str, folder: str | os.PathLike[str], quiet: bool = False) -> str:
    """The official archive of ``dataset`` in ``folder``, downloaded (temp name + rename) and
    MD5-checked unless a good copy is already there."""
    url, md5 = DOWNLOADS[dataset]
    path = _download_path(dataset, folder)
    if os.path.exists(path) and _md5(path) == md5:
        return path
    hint = ("download %s elsewhere and pass it with --source PATH (an extracted folder or an "
            "image tree works too)" % url)

    def fetch(tmp):
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, \
                open(tmp, "wb") as out:
            from tqdm import tqdm
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="downloading",
                      disable=True if quiet else None) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        got = _md5(tmp)
        if got != md5:
            raise DataError("downloaded %s has MD5 %s, expected %s (damaged download); retry, or %s"
                            % (url, got, md5, hint))
    try:
        common.atomic_write(path, fetch, make_dirs=False)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError("cannot download %s (%s); %s" % (url, reason, hint)) from None
    return path


def fingerprint(source: str | os.PathLike[str]) -> str:
    """A digest that changes when ``source`` changes: file contents for an archive; names,
    sizes and modification times for a folder."""
    digest = hashlib.sha256()
    with _reading(source):
        if os.path.isfile(source):
            with open(source, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return "sha256:" + digest.hexdigest()
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                st = os.stat(path)
                digest.update(("%s\0%d\0%d\n" % (os.path.relpath(path, source), st.st_size,
                                                 st.st_mtime_ns)).encode("utf-8", "surrogateescape"))
    return "tree-sha256:" + digest.hexdigest()


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (0-255 scale) of uint8 (N, H, W, C) images."""
    total = np.zeros(images.shape[-1], np.float64)
    squares = np.zeros(images.shape[-1], np.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].reshape(-1, images.shape[-1]).astype(np.float64)
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def _read_json(path):
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _existing(fileset, stats_path):
    """None when no file of the data set exists; else ``(stats or None, problem or None)``:
    the stats of the set there and why its files are not the ones they describe."""
    if not fileset.present():
        return None
    stats = _read_json(stats_path)
    if stats is None:
        return None, "%s is missing or unreadable" % os.path.basename(stats_path)
    return stats, set_problem(stats, fileset.folder, fileset.names[:-1])


def _refuse_replacing(existing, stats_path, source):
    """DataError: an existing data set is never replaced without --force."""
    stats, problem = existing
    if problem:
        raise DataError("%s holds an incomplete data set (%s); pass --force to rebuild it"
                        % (os.path.dirname(stats_path), problem))
    old = stats.get("conversion") or {}
    changed = " (changed since)" if old.get("source") == source else ""
    raise DataError("%s already holds a data set of %s classes converted from %s%s; pass --force "
                    "to replace it, or choose another --name or --output-dir"
                    % (stats_path, stats.get("num_classes", "?"), old.get("source", "?"), changed))


def _check_classes(data, source):
    """DataError unless the training split has images of at least 2 classes."""
    used = [data.classes[i] for i in np.unique(data.train.labels)]
    if len(used) < 2:
        raise DataError("%s has training images of %d class (%s); a classifier needs at least "
                        "2 classes: add class folders or use another source"
                        % (source, len(used), ", ".join(used) or "none"))


@contextlib.contextmanager
def _writing(output_dir):
    """OSError while writing the outputs -> DataError naming the folder."""
    try:
        yield
    except OSError as exc:
        raise DataError("cannot write in %s (%s); choose a writable --output-dir with free space"
                        % (output_dir, exc.strerror or exc)) from None


def _lock_and_clean(stack, fileset, dataset, log):
    """Take the data set's writer lock (held until ``stack`` closes) and remove what
    interrupted runs left.  Returns the OSError when the folder cannot be written (then only
    a no-op can succeed), else None."""
    try:
        stack.enter_context(fileset.lock())
    except OSError as exc:
        return exc
    with _writing(fileset.folder):
        removed, freed = fileset.remove_stale()
    if removed:
        log("removed %d file(s) (%.1f MB) that an interrupted run left in %s"
            % (len(removed), freed / 1e6, fileset.folder))
    for path in common.stale_temp_files(_download_path(dataset, fileset.folder)):
        log("note: %s is a partial download (of a killed run?); delete it unless a download "
            "is running" % path)  # another data set's run may be downloading: not ours to remove
    return None


def _download_path(dataset, folder):
    return os.path.join(folder, DOWNLOADS[dataset][0].rsplit("/", 1)[1])


def _up_to_date(existing, settings):
    return existing is not None and existing[1] is None \
        and existing[0].get("conversion") == settings


def _check_options(dataset, img_format, quality, name):
    """``(quality, name)`` after checking the options; DataError for a bad one."""
    if dataset not in DOWNLOADS:
        raise DataError("unknown dataset %r; choose cifar10 or cifar100" % (dataset,))
    if img_format not in ("png", "jpeg"):
        raise DataError("unknown format %r; choose png (lossless) or jpeg" % (img_format,))
    if quality is not None and img_format != "jpeg":
        raise DataError("--quality applies to --format jpeg only (PNG is lossless)")
    quality = 95 if quality is None else int(quality)
    if not 1 <= quality <= 100:
        raise DataError("--quality must be 1..100, got %d" % quality)
    name = name or dataset
    if not name or os.sep in name or name.startswith("."):
        raise DataError("--name %r must be a plain file-name prefix" % (name,))
    return quality, name


def _source_path(dataset, source, output_dir, quiet):
    """The absolute source path, downloading the official archive when ``source`` is None."""
    if source is None:
        source = download(dataset, output_dir, quiet=quiet)
    source = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(source):
        raise DataError("source %s does not exist; pass an official CIFAR archive, its "
                        "extracted folder or a train/<class>/ + test/<class>/ image tree" % source)
    expected_md5 = KNOWN_MD5.get(os.path.basename(source))
    if expected_md5 and os.path.isfile(source) and _md5(source) != expected_md5:
        raise DataError("%s has the name of an official archive but not its MD5 (%s); it is "
                        "damaged or incomplete, download it again" % (source, expected_md5))
    return source


def _write_set(folder, name, data, settings, img_format, level, quiet):
    """Write all members of data set ``name`` into ``folder``; return the stats dict.
    ``level``: the PNG compression or JPEG quality."""
    ext = ".png" if img_format == "png" else ".jpg"
    from tqdm import tqdm
    total = data.train.images.shape[0] + data.val.images.shape[0]
    with tqdm(total=total, desc="packing %s" % name, unit="img",
              disable=True if quiet else None) as bar:
        for split_name, split in (("train", data.train), ("val", data.val)):
            writer = SplitWriter(folder, name, split_name, ext, level)
            try:
                for img, label, path in zip(split.images, split.labels, split.names):
                    writer.add(img, label, path)
                    bar.update(1)
            finally:
                writer.close()
    mean, std = channel_stats(data.train.images)
    members = dataset_names(name)[:-1]
    height, width = data.train.images.shape[1:3]
    stats = {"dataset": settings["dataset"], "name": name, "source_kind": data.kind,
             "classes": list(data.classes), "num_classes": len(data.classes),
             "label_mode": settings["label_mode"] if settings["dataset"] == "cifar100" else None,
             "num_train": int(data.train.images.shape[0]),
             "num_val": int(data.val.images.shape[0]),
             "image_shape": [3, int(height), int(width)], "mean": mean, "std": std,
             "format": img_format, "color_order_in_records": "BGR", "conversion": settings,
             "file_sizes": {n: os.path.getsize(os.path.join(folder, n)) for n in members},
             "file_digests": {n: ends_digest(os.path.join(folder, n)) for n in members}}
    if settings.get("skip_bad"):
        stats["skipped"] = list(data.skipped)
    with open(os.path.join(folder, dataset_names(name)[-1]), "w") as f:
        f.write(json.dumps(stats, indent=1) + "\n")
    return stats


def _convert(fileset, source, settings, quiet, log):
    """Read ``source``, check it and write it as a new version of ``fileset``; the stats."""
    data = load_source(source, settings["dataset"], settings["label_mode"], progress=not quiet,
                       max_pixels=settings.get("max_image_pixels", MAX_IMAGE_PIXELS),
                       skip_bad=settings.get("skip_bad", False))
    if data.skipped:
        log("left out %d bad image(s), listed under 'skipped' in %s_stats.json; the first: %s"
            % (len(data.skipped), fileset.key, data.skipped[0]["reason"]))
    _check_classes(data, source)
    for split in (data.train, data.val):
        if split.images.shape[0] == 0:
            raise DataError("%s has no images in one of its splits" % source)
    with _writing(fileset.folder), fileset.replace() as folder:
        return _write_set(folder, fileset.key, data, settings, settings["format"],
                          settings["quality"], quiet)


def _image_settings(max_pixels, skip_bad):
    """The image-reading options that differ from the defaults, for the stats' ``conversion``
    (sets converted with the defaults keep their settings, and stay up to date)."""
    out = {}
    if check_max_pixels(max_pixels) != MAX_IMAGE_PIXELS:
        out["max_image_pixels"] = int(max_pixels)
    if skip_bad:
        out["skip_bad"] = True
    return out


def prepare(dataset: str = "cifar10", source: str | os.PathLike[str] | None = None,
            output_dir: str | os.PathLike[str] | None = None, name: str | None = None,
            img_format: str = "png", quality: int | None = None, label_mode: str = "fine",
            force: bool = False, quiet: bool = False, log: Callable[[str], object] = print,
            max_pixels: int = MAX_IMAGE_PIXELS, skip_bad: bool = False) -> dict[str, Any] | None:
    """Convert ``source`` (downloaded when None) and return the stats dict written beside the
    records, or None when the outputs were already up to date.  Raises :class:`DataError`.

    Images of a tree over ``max_pixels`` (width x height, checked from their headers) are
    refused, as are truncated or corrupt ones; ``skip_bad`` leaves those out instead and lists
    them under ``skipped`` in the stats.

    The data set's files are replaced as a unit (``common.FileSet``): a kill at any instant
    leaves the previous complete set or the new one.  An existing set is replaced only with
    ``force``; a re-run with the same inputs does nothing."""
    quality, name = _check_options(dataset, img_format, quality, name)
    image_settings = _image_settings(max_pixels, skip_bad)
    output_dir = os.path.abspath(os.path.expanduser(
        output_dir or os.path.join("~", ".mxnet", "datasets", dataset)))
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError("--output-dir %s is a file, not a folder; choose a folder" % output_dir)
    with _writing(output_dir):
        os.makedirs(output_dir, exist_ok=True)
    fileset = common.FileSet(output_dir, name, dataset_names(name))
    stats_path = fileset.path(fileset.names[-1])
    with contextlib.ExitStack() as stack:
        cannot_write = _lock_and_clean(stack, fileset, dataset, log)
        existing = _existing(fileset, stats_path)
        if existing and not force and source is None:  # refuse before a long download
            planned = _download_path(dataset, output_dir)
            if (existing[0] or {}).get("conversion", {}).get("source") != planned:
                _refuse_replacing(existing, stats_path, planned)
        source = _source_path(dataset, source, output_dir, quiet)
        settings = {"dataset": dataset, "label_mode": label_mode, "format": img_format,
                    "quality": quality if img_format == "jpeg" else PNG_COMPRESSION,
                    "source": source, "source_fingerprint": fingerprint(source),
                    "version": STATS_VERSION, **image_settings}
        if not force and _up_to_date(existing, settings):
            log("%s is up to date with %s; nothing to do (pass --force to rebuild)"
                % (stats_path, source))
            return None
        if cannot_write is not None:
            with _writing(output_dir):
                raise cannot_write
        if existing and not force:
            _refuse_replacing(existing, stats_path, source)
        start = time.time()
        stats = _convert(fileset, source, settings, quiet, log)
    log("wrote %s_{train,val}.{rec,idx,lst} and %s_stats.json in %s: %d train + %d val images, "
        "%d classes, %s (%.1f s)" % (name, name, output_dir, stats["num_train"], stats["num_val"],
                                     stats["num_classes"], img_format, time.time() - start))
    return stats


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the whole usage)
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, message))


def _parser():
    p = _Parser(prog="prepare_cifar", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DOWNLOADS), default="cifar10",
                   help="which data set (default cifar10); also names the default output folder")
    p.add_argument("--source", help="official archive (python or binary), its extracted folder, "
                   "or a train/<class>/ + test/<class>/ image tree (folder, .tar[.gz], .tgz, "
                   ".zip); default: download the official python archive")
    p.add_argument("--output-dir", help="where to write (default ~/.mxnet/datasets/<dataset>)")
    p.add_argument("--name", help="file-name prefix of the outputs (default: the dataset name)")
    p.add_argument("--format", choices=["png", "jpeg"], default="png",
                   help="image encoding in the records (default png: lossless)")
    p.add_argument("--quality", type=int, help="JPEG quality 1-100 (default 95)")
    p.add_argument("--label-mode", choices=["fine", "coarse"], default="fine",
                   help="CIFAR-100 labels: fine (100 classes, default) or coarse (20)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even if up to date, and replace an existing data set of this "
                   "--name in --output-dir (without it an existing set is never replaced)")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS, metavar="N",
                   help="refuse tree images larger than N pixels (width x height), checked "
                   "before decoding (default %d)" % MAX_IMAGE_PIXELS)
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out tree images that are truncated, corrupt or over "
                   "--max-image-pixels, and list them under 'skipped' in the stats (default: "
                   "stop at the first, naming it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        prepare(dataset=args.dataset, source=args.source, output_dir=args.output_dir,
                name=args.name, img_format=args.format, quality=args.quality,
                label_mode=args.label_mode, force=args.force, quiet=args.quiet,
                max_pixels=args.max_image_pixels, skip_bad=args.skip_bad)
    except common.UserError as exc:  # DataError, or another run holding the data set's lock
        print("prepare_cifar: error: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions: earlier outputs are untouched
        print("prepare_cifar: error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prepare_cifar: interrupted; earlier outputs are untouched", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
