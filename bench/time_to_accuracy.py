"""Time to accuracy on the whole CIFAR-10 training set, through the real command line.

    python bench/time_to_accuracy.py                               # fast, torch peer(s), ResNet-20
    python bench/time_to_accuracy.py --runs fast --epochs 1        # a smoke run
    python bench/time_to_accuracy.py --archive ../shared/data/cifar10-jpeg-subset.tar.gz \\
        --runs fast,torch --epochs 2 --time-limit 900
    python bench/time_to_accuracy.py --report runs/tta92-s0,runs/tta92-peer-s0   # no training

Steps: ``data/prepare_cifar.py --source ARCHIVE`` (the 50,000 training JPEGs and the 5,000
test images, stored losslessly as decoded) -> ``.rec`` -> for each run a fresh process:

* ``fast``: ``train/train_cifar.py --preset fast`` (airbench network, lookahead, alternating
  flip, flip+translate TTA);
* ``torch``: ``bench/airbench_torch.py`` in ``.venv-torch`` (airbench94 in PyTorch, fp32,
  channels_last), fed the very pixels of the same ``.rec`` files (an ``.npz`` written here);
* ``torch_bf16``: the same under PyTorch's bfloat16 CPU autocast (its fastest mode where the
  CPU has avx512_bf16 or AMX);
* ``fast92``, ``torch92``, ``torch92_bf16``: the same three for ``--preset fast92`` and its
  peer, airbench95 (about 4x the fast recipe's work: hours on 2 cores, so not run by default;
  ``--runs fast92,torch92``);
* ``resnet20``: He et al.'s ResNet-20 recipe (``--preset resnet``: lr 0.1, x0.1 at 50% and 75%
  of the epochs, batch 128, wd 1e-4) compressed from 164 to ``--reference-epochs`` epochs.

Each run appends one JSON record per epoch (``-log.jsonl``); this script stamps every record
with the wall-clock seconds since the run's process started when the record appears (so
start-up, data decoding, training and every evaluation so far are in it).  "Time to X%"
is the first epoch whose test accuracy (the 5,000 test images) reaches X%, in that wall
clock, and also in the training clock (the run's training time plus that epoch's one
evaluation: what producing the model and measuring it once costs).  Written to
``--work-dir``: ``results.json``, ``curves.png`` (accuracy vs minutes) and the printed table,
with the CPU model and flags.  Runs are sequential, on the same idle cores.

``--report DIR,DIR...`` trains nothing: it prints the table and the peer comparison of the
runs saved in those work folders' ``results.json`` (a long recipe and its peer run in
separate invocations), each folder's CPU named.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common  # noqa: E402

from mxcnn.common import atomic_write, atomic_write_text  # noqa: E402

ARCHIVE = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg-train-full.tar.gz")
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93)
#: Our recipe runs: the preset each trains, and the peer's airbench_torch.py --recipe.
RECIPES = {"fast": "airbench94", "fast92": "airbench95"}
#: Peer runs: (our recipe run they are compared with, the peer's --dtype).
PEERS = {"torch": ("fast", "float32"), "torch_bf16": ("fast", "bfloat16"),
         "torch92": ("fast92", "float32"), "torch92_bf16": ("fast92", "bfloat16")}
RUNS = ("fast", "torch", "torch_bf16", "fast92", "torch92", "torch92_bf16", "resnet20")
#: Runs left out of the default (hours each on 2 cores).
LONG_RUNS = ("fast92", "torch92", "torch92_bf16")
TORCH_PYTHON = os.path.join(ROOT, ".venv-torch", "bin", "python")
POLL = 0.5


def cpu_label():
    """``model name`` and the vector flags that decide the kernels, from /proc/cpuinfo."""
    info = _common._cpuinfo()
    flags = set(info.get("flags", "").split())
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return "%s (%s), %d usable cores" % (info.get("model name", "unknown CPU"), " ".join(shown),
                                         _common.usable_cores())


def default_runs(flags=None):
    """Every run but the long ones, the bf16 peer only where the CPU has bfloat16 hardware."""
    if flags is None:
        flags = set(_common._cpuinfo().get("flags", "").split())
    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(flags))
    return [name for name in RUNS if name not in LONG_RUNS
            and (not name.endswith("_bf16") or bf16)]


def prepare(archive, work):
    """The .rec set of ``archive`` in ``work/data`` (a no-op when up to date); its seconds."""
    tic = time.time()
    subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare_cifar.py"), "--dataset",
                    "cifar10", "--source", archive, "--output-dir", os.path.join(work, "data"),
                    "--quiet"], check=True)
    return time.time() - tic


def export_pixels(work):
    """``work/cifar10-pixels.npz``: the decoded images, labels and mean/std of the .rec set,
    read by the trainer's own iterator code (so the torch peer sees the same pixels)."""
    path = os.path.join(work, "cifar10-pixels.npz")
    data = os.path.join(work, "data")
    stats_file = os.path.join(data, "cifar10_stats.json")
    if os.path.exists(path) and os.path.getmtime(path) > os.path.getmtime(stats_file):
        return path
    import numpy as np

    from mxcnn.data import iterators
    train, val = iterators.get_rec_iters(os.path.join(data, "cifar10_train.rec"),
                                         os.path.join(data, "cifar10_val.rec"), 1000,
                                         backend="memory", shuffle=False)
    stats = json.load(open(stats_file))
    arrays = dict(train_x=train.images, train_y=train.labels.astype(np.int64), test_x=val.images,
                  test_y=val.labels.astype(np.int64), mean=np.array(stats["mean"], np.float32),
                  std=np.array(stats["std"], np.float32))
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    return path


def commands(name, work, args):
    """``(argv, jsonl the run writes)`` of run ``name``."""
    data = os.path.join(work, "data")
    folder = os.path.join(work, name)
    trainer = [sys.executable, os.path.join(ROOT, "train", "train_cifar.py"), "--data-dir", data,
               "--model-prefix", os.path.join(folder, "m"), "--log-file",
               os.path.join(folder, "mxcnn.train.log"), "--no-plot", "--disp-batches", "10",
               "--seed", str(args.seed)]
    if name in RECIPES:
        # the presets' warm-up is 23% of the epochs: keep it so in a shortened run
        extra = ["--num-epochs", str(args.epochs), "--warmup-epochs", "%g" % (0.23 * args.epochs)] \
            if args.epochs else []
        return trainer + ["--preset", name] + extra + args.fast_args, os.path.join(folder, "m-log.jsonl")
    if name == "resnet20":
        epochs = args.epochs or args.reference_epochs
        steps = "%g,%g" % (epochs * 82 / 164.0, epochs * 123 / 164.0)
        return trainer + ["--preset", "resnet", "--num-layers", "20", "--num-epochs", str(epochs),
                          "--lr-step-epochs", steps], os.path.join(folder, "m-log.jsonl")
    if name in PEERS:
        out = os.path.join(folder, "torch.jsonl")
        recipe, dtype = PEERS[name]
        extra = ["--epochs", str(args.epochs)] if args.epochs else []
        extra += ["--dtype", dtype] if dtype != "float32" else []
        return [TORCH_PYTHON, os.path.join(HERE, "airbench_torch.py"), "--recipe", RECIPES[recipe],
                "--data", export_pixels(work), "--out", out, "--seed", str(args.seed)] + extra, out
    raise SystemExit("unknown run %r; choose from %s" % (name, ", ".join(RUNS)))


def _read(path):
    try:
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError):
        return []


def run(name, work, args):
    """Run ``name`` to its end (or ``--time-limit``); its epoch records with ``wall`` stamps."""
    argv, log = commands(name, work, args)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    for stale in (log,):
        if os.path.exists(stale):
            os.remove(stale)
    print("== %s: %s" % (name, " ".join(argv)), flush=True)
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.time()
    with open(os.path.join(os.path.dirname(log), "stdout.txt"), "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        stamped = {}
        while True:
            done = proc.poll() is not None
            for record in _read(log):
                stamped.setdefault(record["epoch"], dict(record, wall=time.time() - start))
            if done:
                break
            if args.time_limit and time.time() - start > args.time_limit:
                proc.terminate()
                proc.wait()
                print("   %s stopped by --time-limit %g s" % (name, args.time_limit), flush=True)
                break
            time.sleep(POLL)
    records = [stamped[k] for k in sorted(stamped)]
    for r in records:
        r["accuracy"] = 1.0 - r["val_error"]
    if proc.returncode not in (0, None) and not args.time_limit:
        print("   %s exited with %s (see %s)" % (name, proc.returncode, out.name), flush=True)
    return {"name": name, "command": argv, "records": records, "returncode": proc.returncode,
            "wall": time.time() - start}


def _train_clock(records, i):
    """Training seconds of epochs 1..i+1 plus epoch i+1's evaluation (``val_time``)."""
    return sum(r["time"] for r in records[:i + 1]) + records[i].get("val_time", 0.0)


def summarise(result):
    """Thresholds reached, in the wall clock and the training clock, and per-epoch times."""
    records = result["records"]
    reached = {}
    for threshold in THRESHOLDS:
        hit = next((i for i, r in enumerate(records) if r["accuracy"] >= threshold), None)
        reached["%d%%" % round(threshold * 100)] = None if hit is None else {
            "epoch": records[hit]["epoch"], "wall": records[hit]["wall"],
            "train_clock": _train_clock(records, hit)}
    result.update(reached=reached, epoch_times=[r["time"] for r in records],
                  val_times=[r.get("val_time") for r in records],
                  final_accuracy=records[-1]["accuracy"] if records else None,
                  best_accuracy=max((r["accuracy"] for r in records), default=None))
    return result


def table(results, cpu):
    """The side-by-side text table."""
    def cell(hit):
        return "-" if hit is None else "%.1f (%.1f)" % (hit["wall"] / 60, hit["train_clock"] / 60)
    head = "%-10s %6s %7s %8s" % ("run", "epochs", "final", "s/epoch") + "".join(
        " %13s" % t for t in ("80%", "85%", "88%", "90%", "92%", "93%")) + " %8s" % "total"
    lines = ["time to test accuracy on the 5,000 test images, minutes: wall clock since the "
             "process started (training clock incl. one evaluation)", "CPU: " + cpu, head]
    for r in results:
        times = sorted(r["epoch_times"])
        lines.append("%-10s %6d %7s %8s" % (
            r["name"], len(r["records"]),
            "-" if r["final_accuracy"] is None else "%.2f%%" % (100 * r["final_accuracy"]),
            "%.0f" % times[len(times) // 2] if times else "-") +
            "".join(" %13s" % cell(r["reached"]["%d%%" % round(t * 100)]) for t in THRESHOLDS) +
            " %7.1fm" % (r["wall"] / 60))
    return "\n".join(lines)


def peer_ratio(results):
    """The goal's comparison, one line per peer run beside its recipe's run: our wall time to
    the peer's final accuracy / the peer's whole run; the peer's fastest configuration (the
    first line of each recipe) is the one to beat."""
    by = {r["name"]: r for r in results}
    peers = [by[name] for name in PEERS if name in by and by[name]["final_accuracy"] is not None
             and PEERS[name][0] in by]
    lines = []
    for peer in sorted(peers, key=lambda r: (RUNS.index(PEERS[r["name"]][0]), r["records"][-1]["wall"])):
        ours = by[PEERS[peer["name"]][0]]
        goal, peer_time = peer["final_accuracy"], peer["records"][-1]["wall"]
        hit = next((r for r in ours["records"] if r["accuracy"] >= goal), None)
        lines.append("%s peer: %.2f%% in %.1f min; %s %s" % (
            peer["name"], 100 * goal, peer_time / 60, ours["name"],
            "reaches it in %.1f min = %.2fx the peer's time" % (hit["wall"] / 60, hit["wall"] / peer_time)
            if hit else "does not reach it (best %s)" % (
                "-" if ours["best_accuracy"] is None else "%.2f%%" % (100 * ours["best_accuracy"]))))
    return "\n".join(lines) or None


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if r["records"]:
            ax.plot([x["wall"] / 60 for x in r["records"]], [100 * x["accuracy"] for x in r["records"]],
                    "o-", label=r["name"], markersize=3)
    for t in THRESHOLDS:
        ax.axhline(100 * t, color="grey", linewidth=0.5, alpha=0.5)
    ax.set_xlabel("wall clock (minutes since the process started)")
    ax.set_ylabel("test accuracy (%), 5,000 test images")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", default=ARCHIVE, help="image-tree archive (default: the full set)")
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "runs", "time_to_accuracy"))
    parser.add_argument("--runs", default=",".join(default_runs()),
                        help="comma list of: %s (default: all but %s; the _bf16 peers where the "
                             "CPU has avx512_bf16 or AMX)" % (", ".join(RUNS), ", ".join(LONG_RUNS)))
    parser.add_argument("--epochs", type=int, help="override every run's epochs (smoke runs)")
    parser.add_argument("--reference-epochs", type=int, default=10,
                        help="epochs of the compressed He et al. ResNet-20 schedule (default 10)")
    parser.add_argument("--time-limit", type=float, help="stop each run after this many seconds")
    parser.add_argument("--seed", type=int, default=0,
                        help="every run's seed (repeat with others to see the run-to-run spread)")
    parser.add_argument("--report", help="comma list of work folders: print their saved runs "
                                         "side by side and train nothing")
    parser.add_argument("--fast-args", nargs=argparse.REMAINDER, default=[],
                        help="extra train_cifar.py flags for the fast and fast92 runs (last option)")
    args = parser.parse_args(argv)
    if args.report:
        print(saved_report([d.strip() for d in args.report.split(",") if d.strip()]), flush=True)
        return 0
    os.makedirs(args.work_dir, exist_ok=True)
    cpu = cpu_label()
    print("CPU: %s; load average %s" % (cpu, " ".join("%.2f" % v for v in os.getloadavg())), flush=True)
    seconds = prepare(args.archive, args.work_dir)
    print("prepared %s in %.0f s" % (os.path.join(args.work_dir, "data"), seconds), flush=True)
    results = []
    for name in [n.strip() for n in args.runs.split(",") if n.strip()]:
        results.append(summarise(run(name, args.work_dir, args)))
        report = write_report(results, cpu, args, seconds)  # after each run: nothing is lost
    print(report, flush=True)
    return 0


def saved_report(folders):
    """The table and peer comparison of the runs in ``folders``' ``results.json`` files."""
    results, cpus = [], []
    for folder in folders:
        path = os.path.join(folder, "results.json")
        try:
            with open(path) as handle:
                saved = json.load(handle)
            runs, cpu = list(saved["runs"]), saved["cpu"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SystemExit("time_to_accuracy.py: cannot read %s (%s: %s); run the bench with "
                             "--work-dir %s first" % (path, type(err).__name__, err, folder))
        results.extend(runs)
        cpus.append("%s: %s" % (folder, cpu))
    report = table(results, "; ".join(cpus))
    ratio = peer_ratio(results)
    return report + ("\n" + ratio if ratio else "")


def write_report(results, cpu, args, prepare_seconds):
    """``results.json``, ``table.txt`` and ``curves.png`` in the work folder; the table text."""
    report = table(results, cpu)
    ratio = peer_ratio(results)
    report += ("\n" + ratio if ratio else "")
    atomic_write_text(os.path.join(args.work_dir, "results.json"), json.dumps(
        {"cpu": cpu, "archive": args.archive, "prepare_seconds": prepare_seconds, "runs": results,
         "load_average_end": os.getloadavg(), "peer": ratio}, indent=1))
    atomic_write_text(os.path.join(args.work_dir, "table.txt"), report + "\n")
    plot(results, os.path.join(args.work_dir, "curves.png"))
    return report


if __name__ == "__main__":
    sys.exit(main())
