"""Pack images of any size into RecordIO, as MXNet's ``tools/im2rec.py`` does, safely.

    python data/im2rec.py --source my_photos/ --resize 256 --output-dir datasets/
    python data/im2rec.py --source pets.tar.gz --name pets --resize 160 --center-crop --quality 90
    python data/im2rec.py --train-lst train.lst --val-lst val.lst --root images/ --name flowers

Input: a class-per-folder tree (``train/<class>/*`` + ``test/<class>/*`` or ``val/<class>/*``;
a folder, or a .tar/.tar.gz/.tgz/.zip of one) or two im2rec ``.lst`` files
(``index<TAB>label<TAB>path``, paths relative to ``--root``, default each list's folder).
Each image is decoded by the project's bounded reader (``data/images.py``: pixel limit from
the header, truncated or corrupt files refused, CMYK/grey/alpha made RGB), optionally
centre-cropped to a square (``--center-crop``, before the resize, as im2rec does), resized
so that its shorter side is ``--resize`` pixels (aspect ratio kept), and stored BGR-encoded
(JPEG by default, ``--quality``; or PNG) as ``mx.recordio.pack_img`` stores it, by
``--num-workers`` processes.

Output, in ``--output-dir`` (default ``~/.mxnet/datasets/NAME``): ``NAME_{train,val}.{rec,
idx,lst}`` and ``NAME_stats.json`` (classes, counts, the stored image sizes, per-channel RGB
mean/std of the stored training images), one unit (``common.FileSet``) exactly as
data/prepare_cifar.py writes it, so the trainer, score.py and ImageRecordIter read it.  An
existing set is replaced only with ``--force``; unchanged inputs are a no-op.
"""

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from mxcnn import common
from mxcnn.data.errors import DataError
from mxcnn.data.image_lists import list_images
from mxcnn.data.images import MAX_IMAGE_PIXELS, check_max_pixels
from mxcnn.data.packing import PackSettings, Tally, init_worker, pack_job
from mxcnn.data.recfile import SplitWriter, dataset_names, ends_digest, set_problem

__all__ = ["pack", "main"]

PROG = "im2rec"
STATS_VERSION = 1
PNG_COMPRESSION = 3
#: images handed to the workers at a time (an archive's members are read per chunk)
CHUNK = 512
#: images per message to a worker: each message costs both processes a wake-up and a pipe
#: round trip, so small photos went 1.7x faster with 64 than with 4; each worker still gets
#: about 4 messages of a chunk, so none idles long at its end
TASK_IMAGES = 64


def _with_bytes(files, jobs):
    """``jobs`` with an archive member's bytes as their source (one read per chunk)."""
    if files is None or not files.archive:
        return jobs
    blobs = files.read_many([job.source for job in jobs])
    return [job._replace(source=blobs[job.source]) for job in jobs]


def _packed(pool, workers, listing, split, settings):
    """The :class:`~mxcnn.data.packing.Packed` images of ``split``, in order.  The first chunk
    goes to the workers at once (the caller sets up its writer meanwhile) and each next
    chunk while the current one is consumed, so the workers never wait for the writer."""
    jobs = listing.splits[split]
    work = functools.partial(pack_job, settings=settings)

    def submit(start):
        chunk = _with_bytes(listing.files, jobs[start: start + CHUNK])
        if pool is None:
            return map(work, chunk)
        return pool.imap(work, chunk, chunksize=max(1, min(TASK_IMAGES, len(chunk) // (4 * workers))))

    def results(current):
        for start in range(CHUNK, len(jobs) + CHUNK, CHUNK):
            following = submit(start) if start < len(jobs) else None
            yield from current
            current = following

    return results(submit(0))


def _pack_split(results, split, writer, bar, skipped):
    """Write the ``results`` of ``split``; its :class:`~mxcnn.data.packing.Tally`.  A bad image stops with its
    one-line error, or (``skipped`` a list) is left out and listed there."""
    tally = Tally()
    for packed in results:
        bar.update(1)
        if packed.error is None:
            writer.add_encoded(packed.encoded, packed.job.label, packed.job.key, packed.job.name)
            tally.add(packed)
        elif skipped is None:
            raise DataError("%s (or pass --skip-bad to leave out bad images)" % packed.error)
        else:
            skipped.append({"file": packed.job.name, "reason": packed.error})
    if not tally.count:
        raise DataError("no image of the %s split could be packed (all were left out as bad)" % split)
    return tally


@contextlib.contextmanager
def _worker_pool(workers):
    """A pool of ``workers`` processes (None for 1: the images are packed in this one).

    Forked while this process has loaded neither MXNet nor OpenCV (the command line loads
    neither: the records are written without MXNet), else started afresh ("spawn"): a child
    forked from a process whose MXNet engine or OpenCV thread pool runs can hang on their
    locks."""
    if workers < 2:
        yield None
        return
    import multiprocessing

    threaded = {"mxnet", "cv2"} & set(sys.modules)
    method = "fork" if not threaded and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=init_worker) as pool:
        yield pool


def _write_set(folder, name, listing, settings, conversion, workers, quiet, skip_bad):
    """Pack both splits into ``folder`` (a new FileSet version); the stats dict written."""
    from tqdm import tqdm

    skipped = [] if skip_bad else None
    tallies = {}
    total = sum(len(jobs) for jobs in listing.splits.values())
    with (
        tqdm(total=total, desc="packing %s" % name, unit="img", disable=True if quiet else None) as bar,
        _worker_pool(workers) as pool,
    ):
        for split in ("train", "val"):
            results = _packed(pool, workers, listing, split, settings)  # the workers start now
            writer = SplitWriter(folder, name, split)
            try:
                tallies[split] = _pack_split(results, split, writer, bar, skipped)
            finally:
                writer.close()
    stats = _stats(folder, name, listing, tallies, conversion)
    if skipped is not None:
        stats["skipped"] = skipped
    common.atomic_write_text(
        os.path.join(folder, dataset_names(name)[-1]), json.dumps(stats, indent=1) + "\n"
    )
    return stats


def _stats(folder, name, listing, tallies, conversion):
    """The ``NAME_stats.json`` contents (prepare_cifar's keys; ``image_shape`` is None when
    the stored images have more than one size, ``stored_sizes`` gives their range)."""
    mean, std = tallies["train"].mean_std()
    sizes = tallies["train"].sizes | tallies["val"].sizes
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    shape = [3, heights[0], widths[0]] if len(sizes) == 1 else None
    members = dataset_names(name)[:-1]
    used = sorted({job.label for job in listing.splits["train"]})
    return {
        "dataset": name,
        "name": name,
        "source_kind": listing.kind,
        "classes": list(listing.classes),
        "num_classes": len(listing.classes),
        "classes_in_train": len(used),
        "label_mode": None,
        "num_train": tallies["train"].count,
        "num_val": tallies["val"].count,
        "image_shape": shape,
        "stored_sizes": {"height": [min(heights), max(heights)], "width": [min(widths), max(widths)]},
        "mean": mean,
        "std": std,
        "format": conversion["format"],
        "color_order_in_records": "BGR",
        "conversion": conversion,
        "file_sizes": {n: os.path.getsize(os.path.join(folder, n)) for n in members},
        "file_digests": {n: ends_digest(os.path.join(folder, n)) for n in members},
    }


# ---------------------------------------------------------------------------- checks


def _check_options(name, resize, img_format, quality, workers, max_pixels):
    """``(PackSettings, workers)`` after checking the options; DataError for a bad one."""
    if not name or os.sep in name or name.startswith("."):
        raise DataError("--name %r must be a plain file-name prefix" % (name,))
    if resize is not None and resize < 0:
        raise DataError("--resize must be a number of pixels >= 1 (0: keep the sizes), got %d" % resize)
    if img_format not in ("jpeg", "png"):
        raise DataError("unknown --format %r; choose jpeg or png (lossless)" % (img_format,))
    if quality is not None and img_format != "jpeg":
        raise DataError("--quality applies to --format jpeg only (PNG is lossless)")
    quality = 95 if quality is None else int(quality)
    if not 1 <= quality <= 100:
        raise DataError("--quality must be 1..100, got %d" % quality)
    workers = common.usable_cores() if workers is None else int(workers)
    if workers < 1:
        raise DataError("--num-workers must be at least 1, got %d" % workers)
    level = quality if img_format == "jpeg" else PNG_COMPRESSION
    extension = ".jpg" if img_format == "jpeg" else ".png"
    return PackSettings(int(resize or 0), False, extension, level, check_max_pixels(max_pixels)), workers


def _check_classes(listing):
    used = sorted({job.label for job in listing.splits["train"]})
    if len(used) < 2:
        raise DataError(
            "the training images are of %d class (%s); a classifier needs at least "
            "2 classes" % (len(used), ", ".join(listing.classes[i] for i in used))
        )


def _existing_problem(fileset):
    """None when no set of this name exists; else ``(stats, problem or None)``."""
    if not fileset.present():
        return None
    try:
        with open(fileset.path(fileset.names[-1])) as handle:
            stats = json.load(handle)
    except (OSError, ValueError):
        return {}, "%s is missing or unreadable" % fileset.names[-1]
    if not isinstance(stats, dict):
        return {}, "%s is not a stats file" % fileset.names[-1]
    return stats, set_problem(stats, fileset.folder, fileset.names[:-1])


# ---------------------------------------------------------------------------- entry points


def _default_name(source, train_lst):
    base = os.path.basename(os.path.normpath(source or train_lst or ""))
    for ending in (".tar.gz", ".tgz", ".tar", ".zip", ".lst"):
        if base.endswith(ending):
            base = base[: -len(ending)]
    return base[: -len("_train")] if base.endswith("_train") else base


def pack(
    source: str | os.PathLike[str] | None = None,
    train_lst: str | os.PathLike[str] | None = None,
    val_lst: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    resize: int = 0,
    centre_crop: bool = False,
    img_format: str = "jpeg",
    quality: int | None = None,
    workers: int | None = None,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], object] = print,
    max_pixels: int = MAX_IMAGE_PIXELS,
    skip_bad: bool = False,
) -> dict[str, Any] | None:
    """Pack the tree ``source`` (or the .lst pair) and return the stats dict written, or None
    when the data set there is already up to date.  Raises DataError (see the module
    docstring); the previous set is left whole on any failure."""
    if source is None and not (train_lst and val_lst):
        raise DataError("give --source (an image tree) or both --train-lst and --val-lst")
    name = name or _default_name(source, train_lst)
    settings, workers = _check_options(name, resize, img_format, quality, workers, max_pixels)
    settings = settings._replace(centre_crop=bool(centre_crop))
    output_dir = os.path.abspath(
        os.path.expanduser(output_dir or os.path.join("~", ".mxnet", "datasets", name))
    )
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError("--output-dir %s is a file, not a folder; choose a folder" % output_dir)
    listing = list_images(source, train_lst, val_lst, root)
    try:
        _check_classes(listing)
        conversion = {
            "tool": PROG,
            "source": listing.files.source if listing.files else None,
            "lists": [os.path.abspath(p) for p in (train_lst, val_lst)] if listing.files is None else None,
            "source_fingerprint": listing.fingerprint,
            "resize": settings.resize,
            "center_crop": settings.centre_crop,
            "format": img_format,
            "quality": settings.quality,
            "version": STATS_VERSION,
        }
        if settings.max_pixels != MAX_IMAGE_PIXELS:
            conversion["max_image_pixels"] = settings.max_pixels
        if skip_bad:
            conversion["skip_bad"] = True
        return _pack_into(
            output_dir, name, listing, settings, conversion, workers, force, quiet, log, skip_bad
        )
    finally:
        if listing.files is not None:
            listing.files.close()


def _pack_into(output_dir, name, listing, settings, conversion, workers, force, quiet, log, skip_bad):
    """The locked, atomic part of :func:`pack`."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        fileset = common.FileSet(output_dir, name, dataset_names(name))
        with fileset.lock():
            removed, freed = fileset.remove_stale()
            if removed:
                log(
                    "removed %d file(s) (%.1f MB) that an interrupted run left in %s"
                    % (len(removed), freed / 1e6, output_dir)
                )
            existing = _existing_problem(fileset)
            if existing is not None and not force:
                stats, problem = existing
                if problem is None and stats.get("conversion") == conversion:
                    log(
                        "%s is up to date; nothing to do (pass --force to rebuild)"
                        % fileset.path(fileset.names[-1])
                    )
                    return None
                raise DataError(
                    "%s already holds a data set named %s%s; pass --force to replace "
                    "it, or choose another --name or --output-dir"
                    % (output_dir, name, " (incomplete: %s)" % problem if problem else "")
                )
            start = time.time()
            with fileset.replace() as folder:
                stats = _write_set(folder, name, listing, settings, conversion, workers, quiet, skip_bad)
    except OSError as err:
        raise DataError(
            "cannot write in %s (%s); choose a writable --output-dir with free space"
            % (output_dir, err.strerror or err)
        ) from None
    seconds = time.time() - start
    log(
        "wrote %s_{train,val}.{rec,idx,lst} and %s_stats.json in %s: %d train + %d val images, "
        "%d classes, %s (%.1f s, %.0f img/s)"
        % (
            name,
            name,
            output_dir,
            stats["num_train"],
            stats["num_val"],
            stats["num_classes"],
            _sizes_text(stats),
            seconds,
            (stats["num_train"] + stats["num_val"]) / seconds,
        )
    )
    if stats.get("skipped"):
        log(
            "left out %d bad image(s), listed under 'skipped' in %s_stats.json; the first: %s"
            % (len(stats["skipped"]), name, stats["skipped"][0]["reason"])
        )
    return stats


def _sizes_text(stats):
    if stats["image_shape"]:
        return "%dx%d" % (stats["image_shape"][2], stats["image_shape"][1])
    sizes = stats["stored_sizes"]
    return "%d-%d x %d-%d" % (sizes["width"][0], sizes["width"][1], sizes["height"][0], sizes["height"][1])


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the whole usage)
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, message))


def _parser():
    p = _Parser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--source",
        help="image tree: train/<class>/ + test/<class>/ (or val/) "
        "images, as a folder or .tar[.gz]/.tgz/.zip",
    )
    p.add_argument(
        "--train-lst",
        help="im2rec list of the training images (index<TAB>label<TAB>path), instead of --source",
    )
    p.add_argument("--val-lst", help="im2rec list of the validation images")
    p.add_argument("--root", help="folder the .lst paths are relative to (default: each list's)")
    p.add_argument("--output-dir", help="where to write (default ~/.mxnet/datasets/NAME)")
    p.add_argument("--name", help="file-name prefix of the outputs (default: the source's name)")
    p.add_argument(
        "--resize",
        type=int,
        default=0,
        metavar="N",
        help="resize the shorter side to N pixels, aspect ratio kept (default 0: keep the sizes)",
    )
    p.add_argument(
        "--center-crop",
        action="store_true",
        help="crop the centred square of each image first (before --resize)",
    )
    p.add_argument(
        "--format",
        choices=["jpeg", "png"],
        default="jpeg",
        help="image encoding in the records (default jpeg, as im2rec)",
    )
    p.add_argument("--quality", type=int, help="JPEG quality 1-100 (default 95)")
    p.add_argument(
        "--num-workers", type=int, metavar="N", help="decoding/encoding processes (default: the usable cores)"
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        metavar="N",
        help="refuse images larger than N pixels (width x height), checked before "
        "decoding (default %d)" % MAX_IMAGE_PIXELS,
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out truncated, corrupt or oversized images and list them under "
        "'skipped' in the stats (default: stop at the first, naming it)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing data set of this --name in --output-dir"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        pack(
            source=args.source,
            train_lst=args.train_lst,
            val_lst=args.val_lst,
            root=args.root,
            output_dir=args.output_dir,
            name=args.name,
            resize=args.resize,
            centre_crop=args.center_crop,
            img_format=args.format,
            quality=args.quality,
            workers=args.num_workers,
            force=args.force,
            quiet=args.quiet,
            max_pixels=args.max_image_pixels,
            skip_bad=args.skip_bad,
        )
    except common.UserError as err:  # DataError, or another run holding the data set's lock
        return common.cli_error(PROG, err)
    except KeyboardInterrupt:
        print("%s: interrupted; earlier outputs are untouched" % PROG, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
