"""Which MXNet wheel fits this machine: the CPU build or one CUDA build, never two.

Every MXNet 1.9.1 wheel (``mxnet``, ``mxnet-cu101`` ... ``mxnet-cu117``) installs the same
``mxnet/`` package, so a second one silently overwrites the first.  This module holds the
facts (the CUDA builds PyPI serves for 1.9.1 and the NVIDIA driver each needs) and the
choice; ``scripts/mxnet_build.py`` (``make setup``), ``setup.py`` (the pip extras) and
``bench/gpu_smoke.py`` use it.  Standard library only: it runs before any venv exists.

Driver minimums are NVIDIA's "CUDA Toolkit and Corresponding Driver Versions" (Linux x86_64,
the release notes' Table 3) for the GA release of each CUDA version.  Since CUDA 11, a
CUDA 11.x wheel also runs on any driver >= 450.80.02 ("minor version compatibility"), with
a limited feature set (no PTX JIT); :func:`choose` picks by the full-compatibility minimum
and only mentions the newer builds minor-version compatibility would allow.
"""
import re
import shutil
import subprocess

from .errors import UserError

__all__ = ["MXNET_VERSION", "CPU_PACKAGE", "CUDA_BUILDS", "MINOR_COMPAT_DRIVER", "parse_version",
           "nvidia_driver", "choose", "normalise", "installed_builds", "install_plan", "is_build", "extras", "BuildError"]

MXNET_VERSION = "1.9.1"
CPU_PACKAGE = "mxnet"
#: (package, CUDA version, minimum Linux driver for full compatibility), newest first.
CUDA_BUILDS = (
    ("mxnet-cu117", "11.7", "515.43.04"),
    ("mxnet-cu116", "11.6", "510.39.01"),
    ("mxnet-cu115", "11.5", "495.29.05"),
    ("mxnet-cu114", "11.4", "470.42.01"),
    ("mxnet-cu113", "11.3", "465.19.01"),
    ("mxnet-cu112", "11.2", "460.27.03"),
    ("mxnet-cu111", "11.1", "455.23"),
    ("mxnet-cu110", "11.0", "450.51.06"),
    ("mxnet-cu102", "10.2", "440.33"),
    ("mxnet-cu101", "10.1", "418.39"),
)
#: Any CUDA 11.x build runs on this driver or newer (minor version compatibility, limited).
MINOR_COMPAT_DRIVER = "450.80.02"

# Distributions that install the `mxnet/` package (the builds, not tools named mxnet-*).
_BUILD_NAME = re.compile(r"^mxnet(-cu\d+(mkl)?|-mkl|-native)?$")


class BuildError(UserError):
    """A build name or a machine state that leaves no valid choice (one line for the user)."""


def parse_version(text):
    """``"515.43.04"`` -> ``(515, 43, 4)``; ValueError for anything else."""
    parts = str(text).strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError("not a driver version: %r" % (text,))
    return tuple(int(p) for p in parts)


def nvidia_driver(run=subprocess.run, which=shutil.which):
    """``(driver version string, GPU count)`` from ``nvidia-smi``, or None without a GPU.

    None when ``nvidia-smi`` is missing, fails (no driver loaded, no device) or lists no GPU.
    """
    exe = which("nvidia-smi")
    if not exe:
        return None
    try:
        out = run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                  capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [l.strip() for l in (out.stdout or "").splitlines() if l.strip()]
    if out.returncode != 0 or not lines:
        return None
    try:
        parse_version(lines[0])
    except ValueError:
        return None
    return lines[0], len(lines)


def normalise(name):
    """A user's build name -> the PyPI package: ``cpu``/``mxnet`` -> ``mxnet``, ``cu117`` or
    ``mxnet-cu117`` -> ``mxnet-cu117``.  BuildError naming the valid choices otherwise."""
    key = str(name).strip().lower().replace("_", "-")
    if key in ("cpu", CPU_PACKAGE):
        return CPU_PACKAGE
    if not key.startswith("mxnet-"):
        key = "mxnet-" + key
    known = [package for package, _, _ in CUDA_BUILDS]
    if key not in known:
        raise BuildError("unknown MXNet build %r: use cpu or one of %s (MXNet %s wheels)"
                         % (name, ", ".join(p.split("-", 1)[1] for p in known), MXNET_VERSION))
    return key


def choose(requested=None, driver=None):
    """``(package, reason)``: the wheel to install.

    ``requested`` (``"auto"``/None, ``"cpu"``, ``"cu117"``, ``"mxnet-cu117"``) wins when given;
    otherwise ``driver`` (the :func:`nvidia_driver` result) picks the newest CUDA build whose
    full-compatibility driver minimum it meets, and no driver means the CPU build.
    """
    if requested not in (None, "", "auto"):
        return normalise(requested), "requested"
    if driver is None:
        return CPU_PACKAGE, "no NVIDIA GPU found (nvidia-smi absent or failing)"
    version, count = driver
    have = parse_version(version)
    for package, cuda, minimum in CUDA_BUILDS:
        if have >= parse_version(minimum):
            reason = ("%d NVIDIA GPU(s), driver %s >= %s needed by CUDA %s"
                      % (count, version, minimum, cuda))
            if package != CUDA_BUILDS[0][0] and have >= parse_version(MINOR_COMPAT_DRIVER):
                reason += ("; newer 11.x builds (up to %s) also run through minor version "
                           "compatibility, without PTX JIT: pass MXNET=%s to use one"
                           % (CUDA_BUILDS[0][0], CUDA_BUILDS[0][0]))
            return package, reason
    raise BuildError("NVIDIA driver %s is older than %s, the minimum of the oldest MXNet %s CUDA "
                     "build (CUDA 10.1): upgrade the driver, or install the CPU build with "
                     "MXNET=cpu" % (version, CUDA_BUILDS[-1][2], MXNET_VERSION))


def is_build(name):
    """True for a distribution name that installs the ``mxnet/`` package."""
    return bool(_BUILD_NAME.match(str(name).strip().lower().replace("_", "-")))


def installed_builds(distributions=None):
    """Sorted ``[(name, version)]`` of the MXNet builds installed (``importlib.metadata``)."""
    if distributions is None:
        import importlib.metadata as md
        distributions = md.distributions()
    found = set()
    for dist in distributions:
        name = dist.metadata["Name"] or ""
        if is_build(name):
            found.add((name.lower().replace("_", "-"), dist.version))
    return sorted(found)


def install_plan(wanted, installed, version=MXNET_VERSION):
    """pip argument lists that leave exactly ``wanted==version`` installed.

    Every MXNet build present is uninstalled first (they share the ``mxnet/`` folder, so
    installing over one would mix two builds' files); nothing is done when ``wanted`` at
    ``version`` is already the only build.
    """
    if list(installed) == [(wanted, version)]:
        return []
    plan = [["uninstall", "-y"] + sorted({name for name, _ in installed})] if installed else []
    return plan + [["install", "%s==%s" % (wanted, version)]]


def extras():
    """``extras_require`` for setup.py: ``cpu`` and one extra per CUDA build (``cu117`` ...)."""
    table = {"cpu": ["%s==%s" % (CPU_PACKAGE, MXNET_VERSION)]}
    for package, _, _ in CUDA_BUILDS:
        table[package.split("-", 1)[1]] = ["%s==%s" % (package, MXNET_VERSION)]
    return table

