"""GPU smoke test for a machine with an NVIDIA GPU: install, train, resume, compare.

    python bench/gpu_smoke.py                 # everything below, into .venv-gpu
    python bench/gpu_smoke.py --dry-run       # print the plan; install and run nothing

1. Installs the CUDA build that fits the driver (``common/mxnet_build.py``; ``--mxnet cu117``
   to choose) into its own venv (``--venv``, default ``.venv-gpu``) with the project's pins.
2. Trains ResNet-20 on synthetic CIFAR-sized batches (``--benchmark 1``, batch 128, one
   epoch of ``--batches`` batches after a warm-up epoch) on ``--gpus 0`` and, with two or
   more GPUs, ``--gpus 0,1 --kv-store device``; in fp32 and, when the trainer has ``--dtype``,
   in fp16.
3. Checks a bit-exact deterministic resume on ``--gpus 0``: 2 epochs straight against 1 epoch
   then ``--resume`` to 2, on a small generated data set; the parameters must be equal.
4. Prints our img/s next to MXNet's own ``example/image-classification/train_cifar10.py`` run
   the same way (``--benchmark 1``, same network, batch and GPUs), interleaved round by round.
   MXNet publishes no CIFAR speed figures (its README's speed table is ImageNet on a K80) and
   the pip wheels do not ship ``example/``, so the script fetches the example's files at tag
   1.9.1 from MXNet's repository (or takes ``--mxnet-example DIR``) and runs it.

Exit status: 0 all passed; 1 a run failed or the resume was not bit-exact; 2 no GPU (one
line), bad arguments, or an install that failed.  Standard library only until the venv exists.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from mxcnn.common import mxnet_build  # noqa: E402  (standard library only)
from mxcnn.common.errors import UserError, cli_error  # noqa: E402

PROG = "gpu_smoke"
EXAMPLE_URL = "https://raw.githubusercontent.com/apache/mxnet/1.9.1/example/image-classification/"
EXAMPLE_FILES = ("train_cifar10.py", "common/__init__.py", "common/find_mxnet.py",
                 "common/data.py", "common/fit.py", "common/util.py", "common/modelzoo.py",
                 "symbols/__init__.py", "symbols/resnet.py")
_OURS = re.compile(r"benchmark: .*: ([\d.]+) img/s")
_THEIRS = re.compile(r"Speed: ([\d.]+) samples/sec")


def gpu_names(run=subprocess.run):
    """Names of the GPUs ``nvidia-smi`` lists (for the report)."""
    out = run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
              text=True, timeout=30)
    return [l.strip() for l in out.stdout.splitlines() if l.strip()] if out.returncode == 0 else []


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def install_steps(venv, package):
    """The commands that build the venv with exactly one MXNet build, ``package``."""
    py = os.path.join(venv, "bin", "python")
    return [[sys.executable, "-m", "venv", venv],
            [py, "-m", "pip", "install", "-q", "-c", os.path.join(ROOT, "constraints.txt"),
             "-r", os.path.join(ROOT, "requirements.txt")],
            [sys.executable, os.path.join(ROOT, "scripts", "mxnet_build.py"), "install",
             "--mxnet", package, "--python", py, "--constraints",
             os.path.join(ROOT, "constraints.txt")],
            [py, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT]]


def speed_configs(gpu_count, has_dtype):
    """``[(label, gpus, dtype)]`` the speed runs cover."""
    configs = [("1 GPU", "0", "float32")]
    if gpu_count >= 2:
        configs.append(("2 GPUs", "0,1", "float32"))
    if has_dtype:
        configs += [(label + " fp16", gpus, "float16") for label, gpus, _ in list(configs)]
    return configs


def ours_command(py, gpus, dtype, batches):
    argv = [py, os.path.join(ROOT, "train", "train_cifar.py"), "--benchmark", "1",
            "--network", "resnet", "--num-layers", "20", "--batch-size", "128",
            "--num-batches", str(batches), "--num-epochs", "2", "--gpus", gpus,
            "--kv-store", "device"]
    return argv + (["--dtype", dtype] if dtype != "float32" else [])


def theirs_command(py, example, gpus, dtype):
    return [py, os.path.join(example, "train_cifar10.py"), "--benchmark", "1", "--network",
            "resnet", "--num-layers", "20", "--batch-size", "128", "--image-shape", "3,32,32",
            "--num-epochs", "1", "--gpus", gpus, "--kv-store", "device", "--dtype", dtype,
            "--disp-batches", "20"]


def resume_commands(py, data, prefix_a, prefix_b):
    """Two epochs straight (A); one epoch, then --resume to two (B)."""
    base = [py, os.path.join(ROOT, "train", "train_cifar.py"), "--network", "resnet",
            "--num-layers", "20", "--batch-size", "64", "--gpus", "0", "--deterministic", "1",
            "--data-train", os.path.join(data, "smoke_train.rec"),
            "--data-val", os.path.join(data, "smoke_val.rec"), "--no-plot"]
    return [base + ["--num-epochs", "2", "--model-prefix", prefix_a],
            base + ["--num-epochs", "1", "--model-prefix", prefix_b],
            base + ["--num-epochs", "2", "--model-prefix", prefix_b, "--resume"]]


def plan(args, driver):
    """Everything the run will do, as printable lines (``--dry-run`` prints only this)."""
    package, reason = mxnet_build.choose(args.mxnet, driver)
    py = os.path.join(args.venv, "bin", "python")
    lines = ["GPU(s): %d, driver %s -> %s (%s)" % (driver[1], driver[0], package, reason)]
    lines += ["install: " + " ".join(c) for c in install_steps(args.venv, package)]
    for label, gpus, dtype in speed_configs(driver[1], True):
        lines.append("speed %s: %s" % (label, " ".join(ours_command(py, gpus, dtype, args.batches))))
        lines.append("  MXNet: %s" % " ".join(theirs_command(py, args.mxnet_example or
                                                             "<fetched example>", gpus, dtype)))
    lines += ["resume: " + " ".join(c) for c in resume_commands(py, "<data>", "<A>", "<B>")]
    return package, lines


def run(argv, log):
    """Run ``argv``; return its combined output (UserError naming it when it fails)."""
    log("$ " + " ".join(argv))
    out = subprocess.run(argv, capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError("%s exited %d:\n%s" % (os.path.basename(argv[1]), out.returncode, tail))
    return text


def fetch_example(folder, log):
    """MXNet 1.9.1's example/image-classification files into ``folder`` (None on failure)."""
    try:
        for name in EXAMPLE_FILES:
            target = os.path.join(folder, name)
            if os.path.exists(target):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if name.endswith("__init__.py"):
                open(target, "w").close()  # the example relies on namespace packages
                continue
            with urllib.request.urlopen(EXAMPLE_URL + name, timeout=60) as response:
                body = response.read()
            with open(target + ".part", "wb") as f:
                f.write(body)
            os.replace(target + ".part", target)
        # train_cifar10.py downloads the real data first even with --benchmark; stand-ins skip it
        for name in ("cifar10_train.rec", "cifar10_val.rec"):
            os.makedirs(os.path.join(folder, "data"), exist_ok=True)
            open(os.path.join(folder, "data", name), "ab").close()
        return folder
    except OSError as exc:
        log("MXNet's example not fetched (%s): its figures are left out; pass --mxnet-example "
            "DIR (MXNet 1.9.1's example/image-classification)" % exc)
        return None


def theirs_speed(py, example, gpus, dtype, log):
    argv = theirs_command(py, example, gpus, dtype)
    log("$ (in %s) %s" % (example, " ".join(argv)))
    out = subprocess.run(argv, capture_output=True, text=True, cwd=example)
    speeds = [float(v) for v in _THEIRS.findall(out.stdout + out.stderr)]
    if out.returncode != 0 or len(speeds) < 2:
        log("MXNet's example failed on %s %s (exit %d)" % (gpus, dtype, out.returncode))
        return None
    return statistics.median(speeds[1:])  # the first report includes cuDNN's autotuning


def speed_table(py, configs, args, example, log):
    """Interleaved rounds of ours and MXNet's example: ``{label: (ours, theirs)}`` medians."""
    results = {label: ([], []) for label, _, _ in configs}
    for _ in range(args.rounds):
        for label, gpus, dtype in configs:
            text = run(ours_command(py, gpus, dtype, args.batches), log)
            results[label][0].append(float(_OURS.findall(text)[-1]))
            if example:
                theirs = theirs_speed(py, example, gpus, dtype, log)
                if theirs is not None:
                    results[label][1].append(theirs)
    return {label: (statistics.median(o), statistics.median(t) if t else None)
            for label, (o, t) in results.items()}


def check_resume(py, work, log):
    """True when one epoch + --resume equals two epochs straight, bit for bit."""
    data = os.path.join(work, "data")
    run([py, os.path.abspath(__file__), "--make-tree", os.path.join(work, "tree")], log)
    run([py, os.path.join(ROOT, "data", "prepare_cifar.py"), "--source",
         os.path.join(work, "tree"), "--output-dir", data, "--name", "smoke", "--quiet"], log)
    prefix_a, prefix_b = os.path.join(work, "a", "model"), os.path.join(work, "b", "model")
    for argv in resume_commands(py, data, prefix_a, prefix_b):
        run(argv, log)
    compare = ("import sys, mxnet as mx\n"
               "a, b = mx.nd.load(sys.argv[1]), mx.nd.load(sys.argv[2])\n"
               "bad = [k for k in a if k not in b or not (a[k] == b[k]).min().asscalar()]\n"
               "print('differ:', len(bad), sorted(bad)[:5])\n")
    text = run([py, "-c", compare, prefix_a + "-0002.params", prefix_b + "-0002.params"], log)
    log(text.strip())
    return "differ: 0 " in text


def make_tree(folder, classes=10, train=64, test=16, seed=0):
    """A train/<class>/ + test/<class>/ tree of 32x32 PNGs whose colour follows the class."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            os.makedirs(os.path.join(folder, split, "c%d" % c), exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] = np.clip(img[..., c % 3].astype(int) // 2 + 25 * c, 0, 255)
                cv2.imwrite(os.path.join(folder, split, "c%d" % c, "%d.png" % i), img)


def report(table, names, log):
    log("ResNet-20, batch 128, synthetic data; GPU: %s; CPU: %s" % (", ".join(names), cpu_model()))
    log("%-12s %10s %14s %7s" % ("config", "ours img/s", "MXNet ex. img/s", "ratio"))
    for label, (ours, theirs) in table.items():
        ratio = "%.2fx" % (ours / theirs) if theirs else "-"
        log("%-12s %10.1f %14s %7s" % (label, ours, "%.1f" % theirs if theirs else "-", ratio))


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default=os.path.join(ROOT, ".venv-gpu"))
    parser.add_argument("--mxnet", default="auto", help="auto (by driver) or a build: cu117, ...")
    parser.add_argument("--mxnet-example", help="MXNet 1.9.1's example/image-classification "
                                                "folder (default: fetched into the venv)")
    parser.add_argument("--batches", type=int, default=391, help="batches per epoch (391 = 50k images)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of each run")
    parser.add_argument("--skip-install", action="store_true", help="use --venv as it is")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("--make-tree", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.make_tree:  # run by the venv's python (numpy, OpenCV)
        make_tree(args.make_tree)
        return 0
    log = lambda line: print(line, flush=True)
    driver = mxnet_build.nvidia_driver()
    if driver is None:
        return cli_error(PROG, "no NVIDIA GPU here (nvidia-smi is missing or fails); this smoke "
                               "test needs a machine with one")
    try:
        package, lines = plan(args, driver)
        if args.dry_run:
            for line in lines:
                log(line)
            return 0
        return smoke(args, package, driver, log)
    except UserError as exc:
        return cli_error(PROG, exc)
    except RuntimeError as exc:
        log("FAILED: %s" % exc)
        return 1


def smoke(args, package, driver, log):
    py = os.path.join(args.venv, "bin", "python")
    if not args.skip_install:
        for step in install_steps(args.venv, package):
            if subprocess.run(step).returncode != 0:
                raise UserError("install step failed: %s" % " ".join(step))
    seen = run([py, "-c", "import mxnet as mx; print('gpus', mx.context.num_gpus())"], log)
    if "gpus 0" in seen:
        raise UserError("%s is installed but MXNet sees no GPU (driver %s); check "
                        "CUDA_VISIBLE_DEVICES and the driver" % (package, driver[0]))
    has_dtype = "--dtype" in run([py, os.path.join(ROOT, "train", "train_cifar.py"), "--help"], log)
    example = args.mxnet_example or fetch_example(os.path.join(args.venv, "mxnet-example"), log)
    table = speed_table(py, speed_configs(driver[1], has_dtype), args, example, log)
    work = os.path.join(args.venv, "smoke-work")
    shutil.rmtree(work, ignore_errors=True)
    exact = check_resume(py, work, log)
    report(table, gpu_names(), log)
    log("deterministic resume on gpu(0): %s" % ("bit-exact" if exact else "DIFFERS"))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
