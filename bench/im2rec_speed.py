"""Packing speed of data/im2rec.py against MXNet's own tools/im2rec.py, on one tree.

    python bench/im2rec_speed.py [--images 4000] [--short-side 256,1024] [--resize 224]
                                 [--workers 2] [--rounds 3]

Builds, in a temporary folder, a class-per-folder tree of photos of mixed sizes: images of
the shared CIFAR-10 JPEG subset upscaled (bicubic) to a random shorter side in
``--short-side`` (default 256-1024 pixels, the range of web photos) and an aspect ratio of
0.6-1.6, saved as JPEG (quality 90), ``train/<class>/`` and ``test/<class>/``.  Then,
interleaved for ``--rounds`` rounds, packs it with both tools in fresh processes with the
same resize, JPEG quality and number of worker processes (MXNet's ``--num-thread``, run
from the installed wheel's ``mxnet/tools/im2rec.py`` over the two .lst files it is given),
and prints each round's wall time and images/s, the medians and their ratio (target: this
project's tool >= 1.0x).  Both times include starting Python
and loading MXNet.  After each run the records are counted and every listed image is
checked to appear exactly once (no image lost or duplicated).
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUBSET = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpeg-subset.tar.gz")


def peer_script():
    """MXNet's im2rec.py as the installed wheel ships it."""
    import importlib.util

    spec = importlib.util.find_spec("mxnet")
    path = os.path.join(os.path.dirname(spec.origin), "tools", "im2rec.py")
    if not os.path.isfile(path):
        sys.exit("MXNet's tools/im2rec.py is not in the installed wheel (%s)" % path)
    return path


def make_tree(subset, folder, count, short_side=(256, 1024), seed=0):
    """``count`` images of ``subset`` upscaled to mixed sizes under ``folder/tree``; returns
    ``{split: [(label, relative path)]}`` and the class names."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    with tarfile.open(subset) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name
        )
        groups = {}  # the same share of every split and class folder
        for member in members:
            groups.setdefault(tuple(member.name.split("/")[-3:-1]), []).append(member)
        share = min(1.0, count / float(len(members)))
        chosen = [m for group in groups.values() for m in group[: max(1, int(len(group) * share))]]
        classes = sorted({m.name.split("/")[-2] for m in chosen})
        listing = {"train": [], "test": []}
        for member in chosen:
            split, cls, base = member.name.split("/")[-3:]
            small = cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), 1)
            short = int(rng.integers(short_side[0], short_side[1] + 1))
            aspect = float(rng.uniform(0.6, 1.6))
            size = (int(round(short * aspect)), short) if aspect >= 1 else (short, int(round(short / aspect)))
            big = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
            rel = "%s/%s/%s" % (split, cls, base)
            os.makedirs(os.path.join(folder, "tree", split, cls), exist_ok=True)
            cv2.imwrite(os.path.join(folder, "tree", rel), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
            listing[split].append((classes.index(cls), rel))
    return listing, classes


def write_lsts(folder, listing):
    """MXNet im2rec's ``.lst`` files (``peer_train.lst``, ``peer_val.lst``) of the tree."""
    for split, name in (("train", "train"), ("test", "val")):
        with open(os.path.join(folder, "peer_%s.lst" % name), "w") as handle:
            for index, (label, rel) in enumerate(listing[split]):
                handle.write("%d\t%f\t%s\n" % (index, label, rel))


def run_ours(folder, args):
    out = os.path.join(folder, "ours")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "data", "im2rec.py"),
        "--source",
        os.path.join(folder, "tree"),
        "--name",
        "ours",
        "--output-dir",
        out,
        "--resize",
        str(args.resize),
        "--quality",
        str(args.quality),
        "--num-workers",
        str(args.workers),
        "--force",
        "--quiet",
    ]
    return _timed(cmd), [os.path.join(out, "ours_%s" % s) for s in ("train", "val")]


def run_peer(folder, args, script):
    for path in glob.glob(os.path.join(folder, "peer_*.rec")) + glob.glob(os.path.join(folder, "peer_*.idx")):
        os.remove(path)
    cmd = [
        sys.executable,
        script,
        "--resize",
        str(args.resize),
        "--quality",
        str(args.quality),
        "--num-thread",
        str(args.workers),
        os.path.join(folder, "peer"),
        os.path.join(folder, "tree"),
    ]
    return _timed(cmd), [os.path.join(folder, "peer_%s" % s) for s in ("train", "val")]


def _timed(cmd):
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit("%s failed (%d): %s" % (cmd[1], done.returncode, done.stderr.strip()[-2000:]))
    return seconds


def check_complete(stems, listing):
    """Every listed image exactly once in the records (by .idx key and .lst path), and each
    record decodes; SystemExit naming the first problem."""
    import mxnet as mx

    for stem, split in zip(stems, ("train", "test")):
        expected = sorted(rel for _, rel in listing[split])
        record = mx.recordio.MXIndexedRecordIO(stem + ".idx", stem + ".rec", "r")
        keys = list(record.keys)
        if len(keys) != len(set(keys)) or len(keys) != len(expected):
            sys.exit(
                "%s: %d records (%d distinct keys) for %d images"
                % (stem, len(keys), len(set(keys)), len(expected))
            )
        for key in keys:
            header, image = mx.recordio.unpack_img(record.read_idx(key))
            if image is None or min(image.shape[:2]) <= 0:
                sys.exit("%s: record %d does not decode" % (stem, key))
        record.close()
        lst = stem + ".lst" if os.path.exists(stem + ".lst") else None
        if lst:
            with open(lst) as handle:
                names = sorted(
                    line.rstrip("\n").split("\t")[-1].split("/", 1)[-1] for line in handle if line.strip()
                )
            wanted = sorted(rel.split("/", 1)[-1] for rel in expected)
            if names != wanted:
                sys.exit("%s lists other images than the tree holds" % lst)


def cpu_name():
    sys.path.insert(0, HERE)
    from _common import _cpuinfo

    return "%s, %d usable cores" % (_cpuinfo().get("model name", "unknown CPU"), len(os.sched_getaffinity(0)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", default=SUBSET, help="the CIFAR-10 JPEG subset archive")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument(
        "--short-side",
        default="256,1024",
        metavar="MIN,MAX",
        help="range of the photos' shorter side in pixels",
    )
    parser.add_argument("--resize", type=int, default=224)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    short_side = tuple(int(v) for v in args.short_side.split(","))
    script = peer_script()
    folder = tempfile.mkdtemp(prefix="im2rec-speed-")
    try:
        listing, classes = make_tree(args.subset, folder, args.images, short_side)
        write_lsts(folder, listing)
        total = sum(len(v) for v in listing.values())
        print(
            "tree: %d images of %d classes, shorter side %d-%d px, packed with --resize %d "
            "--quality %d, %d worker processes; %s"
            % (
                total,
                len(classes),
                short_side[0],
                short_side[1],
                args.resize,
                args.quality,
                args.workers,
                cpu_name(),
            )
        )
        times = {"ours": [], "im2rec": []}
        for round_ in range(args.rounds):
            order = (
                ("ours", lambda: run_ours(folder, args)),
                ("im2rec", lambda: run_peer(folder, args, script)),
            )
            for name, run in order if round_ % 2 == 0 else order[::-1]:
                seconds, stems = run()
                check_complete(stems, listing)
                times[name].append(seconds)
                print("round %d  %-7s %6.1f s  %6.0f img/s" % (round_ + 1, name, seconds, total / seconds))
        ours, peer = (statistics.median(times[k]) for k in ("ours", "im2rec"))
        print(
            "median: data/im2rec.py %.0f img/s, MXNet im2rec.py %.0f img/s: %.2fx"
            % (total / ours, total / peer, peer / ours)
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
