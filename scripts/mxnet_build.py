"""Pick and install the one MXNet build that fits this machine (``make setup`` runs it).

    python scripts/mxnet_build.py choose [--mxnet auto|cpu|cu117|mxnet-cu117]
        prints the package name (and, on stderr, why)
    python scripts/mxnet_build.py install --python .venv/bin/python [--mxnet ...] [--dry-run]
        uninstalls every other MXNet build from that interpreter, then installs the chosen
        one at the pinned version (nothing when it is already the only build there)

``auto`` (the default, also ``$MXNET``) takes a CUDA build when ``nvidia-smi`` answers and
the CPU build elsewhere; see common/mxnet_build.py for the driver table.  A GPU that the
chosen wheel has no machine code for (nvidia-smi's compute_cap) gets one warning line on
stderr.  Bad names and too-old drivers end with one line and exit 2.  Standard library only
(runs before the venv).
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import mxnet_build  # noqa: E402  (import-light, no MXNet)
from common.errors import UserError, cli_error  # noqa: E402

PROG = "mxnet_build"
_LIST_BUILDS = ("import json, sys; sys.path.insert(0, %r); from common import mxnet_build; "
                "print(json.dumps(mxnet_build.installed_builds()))")


def installed_in(python):
    """``[(name, version)]`` of the MXNet builds installed for interpreter ``python``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.sep in python:
        python = os.path.abspath(python)
    try:  # run outside the checkout so that its folders cannot shadow installed packages
        out = subprocess.run([python, "-c", _LIST_BUILDS % root], capture_output=True,
                             text=True, cwd="/")
    except OSError as exc:
        raise UserError("cannot run %s to list its MXNet builds: %s" % (python, exc.strerror))
    if out.returncode != 0:
        raise UserError("cannot run %s to list its MXNet builds: %s"
                        % (python, (out.stderr.strip().splitlines() or ["no output"])[-1]))
    return [tuple(item) for item in json.loads(out.stdout)]


def warn_uncovered_gpus(package: str) -> None:
    """One stderr line when this machine's GPU has no machine code in ``package``'s wheel."""
    if package == mxnet_build.CPU_PACKAGE:
        return
    warning = mxnet_build.arch_warning(mxnet_build.gpu_compute_caps(), package)
    if warning:
        print("%s: warning: %s" % (PROG, warning), file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["choose", "install"])
    parser.add_argument("--mxnet", default=os.environ.get("MXNET") or "auto",
                        help="auto (default), cpu, or a CUDA build such as cu117 / mxnet-cu117")
    parser.add_argument("--python", default=sys.executable,
                        help="install: the interpreter (venv) to install into")
    parser.add_argument("--constraints", help="install: pip -c file")
    parser.add_argument("--dry-run", action="store_true", help="install: print the pip commands only")
    args = parser.parse_args(argv)
    try:
        driver = None if args.mxnet not in ("auto", "") else mxnet_build.nvidia_driver()
        package, reason = mxnet_build.choose(args.mxnet, driver)
        warn_uncovered_gpus(package)
        if args.action == "choose":
            print("%s: %s (%s)" % (PROG, package, reason), file=sys.stderr)
            print(package)
            return 0
        installed = installed_in(args.python)
        plan = mxnet_build.install_plan(package, installed)
        if not plan:
            print("%s: %s %s already installed, the only MXNet build (%s)"
                  % (PROG, package, mxnet_build.MXNET_VERSION, reason))
        for step in plan:
            if step[0] == "install" and args.constraints:
                step = step + ["-c", args.constraints]
            command = [args.python, "-m", "pip"] + step + (["-q"] if step[0] == "install" else [])
            print("%s: %s%s" % (PROG, " ".join(command), "" if args.dry_run else "  # " + reason))
            if not args.dry_run and subprocess.run(command).returncode != 0:
                raise UserError(
                    "pip %s failed (its output is above); fix that and run make setup again" % step[0])
        return 0
    except UserError as exc:
        return cli_error(PROG, exc)


if __name__ == "__main__":
    sys.exit(main())
