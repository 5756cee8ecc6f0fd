"""Devices from the command line: ``--gpus``/``--cpus`` to MXNet contexts, checked against the
GPUs this MXNet build sees.  Shared by the trainer and the inference tools."""
from collections.abc import Sequence

import mxnet as mx

from . import errors

__all__ = ["MAX_CPU_CONTEXTS", "parse_devices", "check_gpus"]

#: More CPU contexts than this is a typo (each context holds a whole copy of the model).
MAX_CPU_CONTEXTS = 64


def parse_devices(gpus: str | int | None = None, cpus: str | int | None = None) -> list[mx.Context]:
    """``--gpus 0,1`` -> [mx.gpu(0), mx.gpu(1)]; ``--cpus N`` -> [mx.cpu(0), ..., mx.cpu(N-1)].

    Neither given: [mx.cpu()].  ``errors.UserError`` for malformed lists or both given.
    """
    if gpus not in (None, "") and cpus is not None:
        raise errors.UserError("give either --gpus or --cpus, not both")
    if gpus not in (None, ""):
        items = [g.strip() for g in str(gpus).split(",")]
        if not all(item.isdigit() for item in items):
            raise errors.UserError("--gpus %r is malformed: use comma-separated device ids, e.g. "
                                   "--gpus 0,1" % (gpus,))
        ids = [int(item) for item in items]
        if len(set(ids)) != len(ids):
            raise errors.UserError("--gpus %r lists a device twice" % (gpus,))
        return [mx.gpu(i) for i in ids]
    count = 1 if cpus is None else int(cpus)
    if not 1 <= count <= MAX_CPU_CONTEXTS:
        raise errors.UserError("--cpus must be a positive number of CPU contexts, from 1 to %d, "
                               "got %r (it counts contexts; omit it for one)"
                               % (MAX_CPU_CONTEXTS, cpus))
    return [mx.cpu(i) for i in range(count)]


def check_gpus(contexts: Sequence[mx.Context]) -> Sequence[mx.Context]:
    """``contexts``, or ``errors.UserError`` when a GPU among them is not one this MXNet sees
    (``mx.context.num_gpus()``: 0 in a CPU-only build)."""
    ids = [ctx.device_id for ctx in contexts if ctx.device_type == "gpu"]
    if not ids:
        return contexts
    try:
        count = mx.context.num_gpus()
    except mx.base.MXNetError:  # a CUDA build without a usable driver
        count = 0
    if max(ids) >= count:
        raise errors.UserError(
            "--gpus %s: this MXNet sees %d GPU(s)%s; train on the CPU (drop --gpus, or --cpus N "
            "for N CPU contexts)%s" % (",".join(map(str, ids)), count,
                                       " (a CPU-only build, or no CUDA device visible)" if not count
                                       else ", numbered from 0",
                                       " or install an MXNet built with CUDA" if not count else ""))
    return contexts
