"""Transfer learning on the shared CIFAR-10 subset: pre-train on the six animal classes,
fine-tune on the four vehicle classes from 50 images each, against training from scratch on
the same 200 images with the same budget.

    OMP_NUM_THREADS=2 python bench/transfer_demo.py [--pretrain-epochs 40] [--epochs 30]

Steps (each a command a user would type; printed as it runs):

1. ``.lst`` files select the images from the extracted subset (``cifar10-jpeg-subset.tar.gz``):
   animals (bird, cat, deer, dog, frog, horse) 1,000 training + 500 test images each;
   vehicles (airplane, automobile, ship, truck) the first 50 training images each and all
   500 test images each.  data/im2rec.py packs them (PNG, lossless).
2. ResNet-20 is trained on the animals (``--pretrain-epochs``, batch 128, lr 0.1 cosine,
   wd 5e-4).
3. On the 200 vehicle images, for ``--epochs`` epochs of batch 50 (cosine): fine-tuned with
   ``--pretrained`` (every layer but the new 4-class classifier loaded, lr 0.02), and from
   scratch at lr 0.1 and at lr 0.02 (the better is the baseline).  Same seed, same steps.
4. inference/score.py scores each on the 2,000 vehicle test images (once, at the end:
   the vehicle runs train with ``--data-val none``).

Prints the vehicles' test accuracy of each run, fine-tuned minus the best from-scratch
(target: >= 10 points), the time taken and the CPU.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUBSET = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpeg-subset.tar.gz")
ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
VEHICLES = ("airplane", "automobile", "ship", "truck")
NETWORK = ["--network", "resnet", "--num-layers", "20"]


def extract(subset, folder):
    """The subset's images under ``folder`` (tarfile's ``data`` filter: no links, no escapes)."""
    with tarfile.open(subset) as tar:
        tar.extractall(folder, filter="data")
    roots = [d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d, "train"))]
    return os.path.join(folder, roots[0]) if roots else folder


def write_lst(path, root, split, classes, per_class=None):
    """An im2rec .lst of ``root/split/<class>/*.jpg`` (labels by ``classes`` order)."""
    index = 0
    with open(path, "w") as handle:
        for label, cls in enumerate(classes):
            names = sorted(os.listdir(os.path.join(root, split, cls)))[:per_class]
            for name in names:
                handle.write("%d\t%d\t%s/%s/%s\n" % (index, label, split, cls, name))
                index += 1
    return path


def run(cmd, log):
    """Run a command of the project, echo it, return its stdout; exit on failure."""
    shown = " ".join(os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT) else c for c in cmd)
    log("$ python " + shown)
    done = subprocess.run(
        [sys.executable] + cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")),
    )
    if done.returncode:
        sys.exit("failed (%d): %s" % (done.returncode, done.stderr.strip()[-3000:]))
    return done.stdout


def pack(work, root, name, train, val, log):
    out = os.path.join(work, "data")
    run(
        [
            os.path.join(ROOT, "data", "im2rec.py"),
            "--train-lst",
            train,
            "--val-lst",
            val,
            "--root",
            root,
            "--name",
            name,
            "--output-dir",
            out,
            "--format",
            "png",
            "--quiet",
        ],
        log,
    )
    return os.path.join(out, name + "_train.rec"), os.path.join(out, name + "_val.rec")


def train(data, prefix, epochs, batch, lr, extra, log):
    run(
        [
            os.path.join(ROOT, "train", "train_cifar.py"),
            *NETWORK,
            "--data-train",
            data[0],
            "--data-val",
            data[1],
            "--num-epochs",
            str(epochs),
            "--batch-size",
            str(batch),
            "--lr",
            str(lr),
            "--lr-scheduler",
            "cosine",
            "--wd",
            "5e-4",
            "--seed",
            "0",
            "--model-prefix",
            prefix,
            "--no-plot",
            "--disp-batches",
            "0",
            *extra,
        ],
        log,
    )


def score(prefix, epoch, val, log):
    out = run(
        [
            os.path.join(ROOT, "inference", "score.py"),
            "--model-prefix",
            prefix,
            "--load-epoch",
            str(epoch),
            "--data-val",
            val,
            "--json",
        ],
        log,
    )
    return json.loads(out)["top-1"]


def cpu_name():
    sys.path.insert(0, HERE)
    from _common import _cpuinfo

    return "%s, %d usable cores" % (_cpuinfo().get("model name", "unknown CPU"), len(os.sched_getaffinity(0)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", default=SUBSET)
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30, help="epochs on the 200 vehicles")
    parser.add_argument("--per-class", type=int, default=50, help="vehicle training images")
    parser.add_argument("--work-dir", help="keep the data and runs here (default: a temp folder)")
    args = parser.parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix="transfer-")
    start = time.time()
    log = lambda text: print("[%5.0f s] %s" % (time.time() - start, text), flush=True)  # noqa: E731
    try:
        root = extract(args.subset, os.path.join(work, "images"))
        lists = {}
        for name, classes, per_class in (("animals", ANIMALS, None), ("vehicles", VEHICLES, args.per_class)):
            lists[name] = (
                write_lst(os.path.join(work, name + "_train.lst"), root, "train", classes, per_class),
                write_lst(os.path.join(work, name + "_val.lst"), root, "test", classes),
            )
        animals = pack(work, root, "animals", *lists["animals"], log)
        vehicles = pack(work, root, "vehicles", *lists["vehicles"], log)
        pre = os.path.join(work, "runs", "animals", "m")
        train(animals, pre, args.pretrain_epochs, 128, 0.1, [], log)
        log(
            "animals: top-1 %.4f on their 3,000 test images"
            % score(pre, args.pretrain_epochs, animals[1], log)
        )
        results = {}
        for label, lr, extra in (
            ("fine-tuned", 0.02, ["--pretrained", pre]),
            ("scratch lr 0.1", 0.1, []),
            ("scratch lr 0.02", 0.02, []),
        ):
            prefix = os.path.join(work, "runs", label.replace(" ", "-"), "m")
            train((vehicles[0], "none"), prefix, args.epochs, 50, lr, extra, log)  # scored below
            results[label] = score(prefix, args.epochs, vehicles[1], log)
            log("%s: vehicles top-1 %.4f" % (label, results[label]))
        scratch = max(v for k, v in results.items() if k.startswith("scratch"))
        print(
            "\nvehicles' test accuracy (2,000 images), %d training images, %d epochs, %s:"
            % (4 * args.per_class, args.epochs, cpu_name())
        )
        for label, value in results.items():
            print("  %-16s %.2f%%" % (label, 100 * value))
        print(
            "fine-tuned - best scratch: %+.2f points (target >= +10); total %.1f min"
            % (100 * (results["fine-tuned"] - scratch), (time.time() - start) / 60)
        )
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
