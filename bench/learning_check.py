"""Does the trainer learn? ResNet-20 on the real CIFAR-10 subset through the real command line.

    OMP_NUM_THREADS=2 python bench/learning_check.py [--epochs 15] [--dtype bfloat16] [--keep DIR]
                                                     [-- extra flags]

Steps: convert ../shared/data/cifar10-jpeg-subset.tar.gz (10k train / 5k test JPEGs) with
``data/prepare_cifar.py --source``, train ``train/train_cifar.py --network resnet
--num-layers 20`` for a fixed budget of epochs, then print test
accuracy and time per epoch from the run's ``-log.jsonl``.  Expectation: >= 70% test
accuracy within 15 epochs.  Not part of the timed test suite (it takes minutes).

The recipe suits a short budget on 10k images: batch 64 (156 steps per epoch), lr 0.1 with
one warm-up epoch and cosine decay to 0, wd 5e-4, momentum 0.9, pad-4 crop + flip.  He et
al.'s step schedule (batch 128, wd 1e-4, x0.1 at 2/3 and 5/6 of the budget) reached 67.9%
here in 15 epochs against 73.3% for this one; flags after ``--`` override the recipe.

``--dtype bfloat16`` trains the same recipe in mixed precision (``train_cifar.py --dtype``;
CPUs with avx512_bf16); the issue's check: it ends within 1 point of a float32 run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg-subset.tar.gz")
TARGET = 0.70


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--source", default=SUBSET)
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="training precision (train_cifar.py --dtype)")
    args = parser.parse_args(argv)
    work = args.keep or tempfile.mkdtemp(prefix="learning_check-")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    data_dir = os.path.join(work, "data")
    tic = time.time()
    subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare_cifar.py"), "--dataset",
                    "cifar10", "--source", args.source, "--output-dir", data_dir, "--quiet"],
                   check=True, env=env)
    print("prepared %s in %.0f s" % (data_dir, time.time() - tic), flush=True)
    suffix = "" if args.dtype == "float32" else "-" + args.dtype
    prefix = os.path.join(work, "run", "resnet20" + suffix)
    command = [sys.executable, os.path.join(ROOT, "train", "train_cifar.py"), "--dataset", "cifar10",
               "--data-dir", data_dir, "--network", "resnet", "--num-layers", "20",
               "--num-epochs", str(args.epochs), "--lr", "0.1", "--lr-scheduler", "cosine",
               "--warmup-epochs", "1", "--batch-size", "64", "--wd", "5e-4", "--mom", "0.9",
               "--model-prefix", prefix, "--dtype", args.dtype,
               "--disp-batches", "50"] + extra
    print(" ".join(command), flush=True)
    tic = time.time()
    result = subprocess.run(command, env=env)
    wall = time.time() - tic
    if result.returncode:
        print("training failed with status %d" % result.returncode)
        return result.returncode
    with open(prefix + "-log.jsonl") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    print("\nepoch  train-err  test-acc   lr       time(s)  img/s")
    for r in records:
        print("%5d  %8.4f  %8.4f  %.4f  %7.1f  %6.0f" % (r["epoch"], r["train_error"],
                                                         1 - r["val_error"], r["lr"], r["time"],
                                                         r["img_per_sec"]))
    best = max(1 - r["val_error"] for r in records)
    final = 1 - records[-1]["val_error"]
    print("\n%s: final test accuracy %.4f, best %.4f, target >= %.2f: %s; %.0f s wall (%s)"
          % (args.dtype, final, best, TARGET, "PASS" if final >= TARGET else "FAIL", wall, work))
    return 0 if final >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
