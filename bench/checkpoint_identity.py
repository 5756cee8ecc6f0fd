"""Does a refactor keep training bit for bit?  The same deterministic runs, before and after.

    python bench/checkpoint_identity.py --before v0.1               # any older commit or tag
    python bench/checkpoint_identity.py --before HEAD~1 --epochs 1

For each case, ``train/train_cifar.py`` runs three times in fresh processes, with
``--deterministic 1`` and the same seed and data: once in a worktree of ``--before``, twice
in this checkout (the second run shows the checkout is deterministic, so a difference
between before and after is the code's, not noise).  Printed per case: whether the
``PREFIX-NNNN.params`` of the last epoch are the same bytes, the largest absolute difference
of any array, and whether the ``-symbol.json`` files are equal.

The cases keep to graphs both trees bind identically:

* ``lenet``: no BatchNorm and no global pooling, on oneDNN with ``--no-fusion``;
* ``resnet8``: ResNet-8 with ``MXNET_MKLDNN_ENABLED=0``, where neither tree rewrites the
  training graph (the global-pooling rewrite and the fusion are oneDNN-only).

Data: the 10k/5k CIFAR-10 subset, converted once into ``--work-dir`` by this checkout's
``data/prepare_cifar.py``; both trees read the same ``.rec`` files.  ``.states`` files are not
compared: their format changed on purpose once (optimizer states are stored by name, on the CPU).
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common  # noqa: E402,F401

#: the shared real data, beside the checkout (``../shared/data``)
ARCHIVE = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg-subset.tar.gz")
CASES = {
    "lenet": (["--network", "lenet", "--no-fusion"], {}),
    "resnet8": (["--network", "resnet", "--num-layers", "8"], {"MXNET_MKLDNN_ENABLED": "0"}),
}


def worktree(rev, work):
    """A checkout of ``rev`` under ``work`` (made once per commit)."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", rev], check=True,
                            capture_output=True, text=True).stdout.strip()
    path = os.path.join(work, "tree-" + commit[:12])
    if not os.path.isdir(path):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, commit],
                       check=True, capture_output=True)
    return path


def train(tree, prefix, data, args, env, epochs, examples):
    """Run ``tree``'s trainer once; the path of its last ``.params``."""
    command = [sys.executable, os.path.join(tree, "train", "train_cifar.py"),
               "--data-train", os.path.join(data, "cifar10_train.rec"),
               "--data-val", os.path.join(data, "cifar10_val.rec"),
               "--num-epochs", str(epochs), "--num-examples", str(examples),
               "--lr-step-epochs", str(epochs), "--batch-size", "64", "--seed", "7",
               "--deterministic", "1", "--model-prefix", prefix, "--no-plot"] + args
    child = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="2", **env)
    done = subprocess.run(command, cwd=tree, env=child, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit("checkpoint_identity: training in %s failed: %s" % (tree, last))
    return "%s-%04d.params" % (prefix, epochs)


def compare(first, second):
    """``(same bytes, largest absolute difference)`` of two ``.params`` files."""
    import mxnet as mx
    import numpy as np
    with open(first, "rb") as a, open(second, "rb") as b:
        same = a.read() == b.read()
    left, right = mx.nd.load(first), mx.nd.load(second)
    if sorted(left) != sorted(right):
        return same, float("inf")
    return same, max(float(np.abs(left[k].asnumpy() - right[k].asnumpy()).max()) for k in left)


def same_file(first, second):
    with open(first, "rb") as a, open(second, "rb") as b:
        return a.read() == b.read()


def run_case(name, before_tree, data, work, epochs, examples):
    args, env = CASES[name]
    runs = {}
    for label, tree in (("before", before_tree), ("after", ROOT), ("again", ROOT)):
        folder = os.path.join(work, name, label)
        shutil.rmtree(folder, ignore_errors=True)  # a fresh prefix: no run owns it yet
        os.makedirs(folder)
        runs[label] = train(tree, os.path.join(work, name, label, "model"), data, args, env,
                            epochs, examples)
    row = {"case": name}
    for pair in (("before", "after"), ("after", "again")):
        same, diff = compare(runs[pair[0]], runs[pair[1]])
        row["%s=%s" % pair] = "%s (max diff %.3g)" % ("same bytes" if same else "DIFFER", diff)
    symbols = [p.replace(".params", "").rsplit("-", 1)[0] + "-symbol.json"
               for p in (runs["before"], runs["after"])]
    row["symbol.json"] = "same" if same_file(*symbols) else "differ"
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="commit or tag to compare with (e.g. HEAD~1)")
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "runs", "checkpoint_identity"))
    parser.add_argument("--archive", default=ARCHIVE)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-examples", type=int, default=2560)
    args = parser.parse_args(argv)
    work = os.path.abspath(args.work_dir)
    data = os.path.join(work, "data")
    subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare_cifar.py"), "--dataset",
                    "cifar10", "--source", args.archive, "--output-dir", data, "--quiet"],
                   check=True)
    before = worktree(args.before, work)
    print("before: %s   after: this checkout   CPU: %s" % (args.before, _common._cpuinfo().get(
        "model name", "unknown")))
    for name in args.cases.split(","):
        row = run_case(name, before, data, work, args.epochs, args.num_examples)
        print("  ".join("%s: %s" % item for item in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
