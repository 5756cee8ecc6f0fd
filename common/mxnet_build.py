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
:data:`WHEEL_ARCHS` holds the GPU architectures each wheel has code for, and
:func:`arch_warning` says in one line when this machine's GPU is not among them.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from importlib.metadata import Distribution

__all__ = ["MXNET_VERSION", "CPU_PACKAGE", "CUDA_BUILDS", "MINOR_COMPAT_DRIVER", "WHEEL_ARCHS",
           "GPU_GENERATIONS", "parse_version", "nvidia_driver", "gpu_compute_caps",
           "gpu_generation", "runs_sass", "arch_warning", "choose", "normalise",
           "installed_builds", "install_plan", "is_build", "extras", "BuildError"]

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
#: The GPU code of MXNet's own kernels in each wheel (``libmxnet.so``'s ``.nv_fatbin``), read
#: from the 1.9.1 wheels by ``scripts/wheel_gpu_archs.py``: package -> (SASS, PTX), 75 meaning
#: sm_75 / compute_75.  No wheel carries PTX, so no GPU runs them through PTX JIT.
WHEEL_ARCHS = {
    "mxnet-cu117": ((50, 60, 70, 80, 86), ()),
    "mxnet-cu116": ((50, 60, 70, 80, 86), ()),
    "mxnet-cu115": ((50, 60, 70, 80, 86), ()),
    "mxnet-cu114": ((50, 60, 70, 80, 86), ()),
    "mxnet-cu113": ((50, 60, 70, 80, 86), ()),
    "mxnet-cu112": ((50, 60, 70, 80, 86), ()),
    "mxnet-cu111": ((50, 60, 70, 80, 86), ()),
    "mxnet-cu110": ((50, 60, 70, 80), ()),
    "mxnet-cu102": ((30, 50, 60, 70, 75), ()),
    "mxnet-cu101": ((30, 50, 60, 70, 75), ()),
}
#: NVIDIA GPU generations and their compute capabilities ``(major, minor)``.
GPU_GENERATIONS = (
    ("Kepler", ((3, 0), (3, 2), (3, 5), (3, 7))),
    ("Maxwell", ((5, 0), (5, 2), (5, 3))),
    ("Pascal", ((6, 0), (6, 1), (6, 2))),
    ("Volta", ((7, 0), (7, 2))),
    ("Turing", ((7, 5),)),
    ("Ampere", ((8, 0), (8, 6), (8, 7))),
    ("Ada", ((8, 9),)),
    ("Hopper", ((9, 0),)),
    ("Blackwell", ((10, 0), (10, 3), (11, 0), (12, 0), (12, 1))),
)

# Distributions that install the `mxnet/` package (the builds, not tools named mxnet-*).
_BUILD_NAME = re.compile(r"^mxnet(-cu\d+(mkl)?|-mkl|-native)?$")


class BuildError(UserError):
    """A build name or a machine state that leaves no valid choice (one line for the user)."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"515.43.04"`` -> ``(515, 43, 4)``; ValueError for anything else."""
    parts = str(text).strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError("not a driver version: %r" % (text,))
    return tuple(int(p) for p in parts)


def nvidia_driver(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
                  which: Callable[[str], str | None] = shutil.which) -> tuple[str, int] | None:
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


def gpu_compute_caps(
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
        which: Callable[[str], str | None] = shutil.which) -> list[tuple[int, int]] | None:
    """``[(major, minor)]`` per GPU from ``nvidia-smi --query-gpu=compute_cap``, or None.

    None when ``nvidia-smi`` is missing or fails, or is too old to know ``compute_cap``.
    """
    exe = which("nvidia-smi")
    if not exe:
        return None
    try:
        out = run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
                  capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [l.strip() for l in (out.stdout or "").splitlines() if l.strip()]
    if out.returncode != 0 or not lines or not all(re.fullmatch(r"\d+\.\d", l) for l in lines):
        return None
    return [(int(l.split(".")[0]), int(l.split(".")[1])) for l in lines]


def gpu_generation(cap: tuple[int, int]) -> str | None:
    """``(8, 6)`` -> ``"Ampere"``; None for a compute capability not in GPU_GENERATIONS."""
    for name, caps in GPU_GENERATIONS:
        if tuple(cap) in caps:
            return name
    return None


def runs_sass(cap: tuple[int, int], sass: Iterable[int]) -> bool:
    """True when SASS for one of ``sass`` runs on ``cap``: same major, minor <= the GPU's."""
    return any(arch // 10 == cap[0] and arch % 10 <= cap[1] for arch in sass)


def _cap_text(cap: tuple[int, int]) -> str:
    name = gpu_generation(cap)
    return "%d.%d%s" % (cap[0], cap[1], " (%s)" % name if name else "")


def _build_with_sass(caps: Sequence[tuple[int, int]],
                     archs: dict[str, tuple]) -> tuple[str, str] | None:
    """``(package, driver minimum)`` of the newest build whose SASS runs on every GPU."""
    for package, _cuda, minimum in CUDA_BUILDS:
        if package in archs and all(runs_sass(c, archs[package][0]) for c in caps):
            return package, minimum
    return None


def arch_warning(caps: Sequence[tuple[int, int]] | None, package: str,
                 archs: dict[str, tuple] = WHEEL_ARCHS) -> str | None:
    """One line when a GPU of ``caps`` (``[(major, minor)]``, :func:`gpu_compute_caps`) has no
    SASS in ``package``'s wheel, else None (also for the CPU build or unknown GPUs)."""
    if not caps or package not in archs:
        return None
    sass, ptx = archs[package]
    missing = sorted({tuple(c) for c in caps if not runs_sass(c, sass)})
    if not missing:
        return None
    code = " ".join(["sm_%d" % a for a in sass] + ["compute_%d" % a for a in ptx])
    line = ("GPU compute capability %s: %s has no machine code for it (%s%s)"
            % (", ".join(map(_cap_text, missing)), package, code, "" if ptx else ", no PTX"))
    other = _build_with_sass(caps, archs)
    fix = ("use MXNET=%s, which has it (driver >= %s)" % (other[0].split("-", 1)[1], other[1])
           if other else None)
    if all(any((a // 10, a % 10) <= c for a in ptx) for c in missing):
        cuda, minimum = [(cu, m) for p, cu, m in CUDA_BUILDS if p == package][0]
        return (line + "; it runs only through the driver's PTX JIT (slow first start), which "
                "needs a driver with full CUDA %s support (>= %s): CUDA's minor version "
                "compatibility has no PTX JIT, and CUDA_DISABLE_PTX_JIT=1 turns it off%s"
                % (cuda, minimum, "; " + fix if fix else ""))
    if not fix and len(missing) < len(set(map(tuple, caps))):
        fix = "hide those GPUs with CUDA_VISIBLE_DEVICES, or use MXNET=cpu"
    elif not fix:
        fix = ("no MXNet %s wheel has code for it (they stop at CUDA %s, before Hopper and "
               "Blackwell): use MXNET=cpu" % (MXNET_VERSION, CUDA_BUILDS[0][1]))
    return line + "; MXNet's GPU operators fail there with 'no kernel image is available': " + fix


def normalise(name: str) -> str:
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


def choose(requested: str | None = None, driver: tuple[str, int] | None = None) -> tuple[str, str]:
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


def is_build(name: str) -> bool:
    """True for a distribution name that installs the ``mxnet/`` package."""
    return bool(_BUILD_NAME.match(str(name).strip().lower().replace("_", "-")))


def installed_builds(distributions: Iterable[Distribution] | None = None) -> list[tuple[str, str]]:
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


def install_plan(wanted: str, installed: Sequence[tuple[str, str]],
                 version: str = MXNET_VERSION) -> list[list[str]]:
    """pip argument lists that leave exactly ``wanted==version`` installed.

    Every MXNet build present is uninstalled first (they share the ``mxnet/`` folder, so
    installing over one would mix two builds' files); nothing is done when ``wanted`` at
    ``version`` is already the only build.
    """
    if list(installed) == [(wanted, version)]:
        return []
    plan = [["uninstall", "-y"] + sorted({name for name, _ in installed})] if installed else []
    return plan + [["install", "%s==%s" % (wanted, version)]]


def extras() -> dict[str, list[str]]:
    """``extras_require`` for setup.py: ``cpu`` and one extra per CUDA build (``cu117`` ...)."""
    table = {"cpu": ["%s==%s" % (CPU_PACKAGE, MXNET_VERSION)]}
    for package, _, _ in CUDA_BUILDS:
        table[package.split("-", 1)[1]] = ["%s==%s" % (package, MXNET_VERSION)]
    return table
