"""Test-time augmentation: the mean of the class probabilities over augmented views.

``--tta flip``: the image and its horizontal mirror (Page 2018).  ``--tta flip,translate``:
also the image shifted by one pixel down-right and up-left, each with its mirror (6 views:
airbench94's TTA, Jordan 2024 Sec. 3.6, which weights the shifted views 1/4 each; here all
views weigh the same).  ``translate`` alone: the unshifted image and its 2 shifts.  Shifts
fill the uncovered border by reflection.  Views are made on the normalised (N, C, H, W)
batch, so any network and iterator works; the cost is one forward pass per view.
"""
import numpy as np

from mxcnn import common

__all__ = ["MODES", "parse", "views", "predict"]

MODES = ("flip", "translate")
#: The one-pixel shifts of ``translate`` as (dy, dx).
SHIFTS = ((1, 1), (-1, -1))


def parse(text):
    """``'flip,translate'`` -> ``('flip', 'translate')``; '' / 'none' -> (); UserError else."""
    if text is None:
        return ()
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if items in ([], ["none"]):
        return ()
    bad = [t for t in items if t not in MODES]
    if bad:
        raise common.UserError("--tta %r: unknown view %s; use flip, translate, flip,translate "
                               "or none" % (text, ", ".join(bad)))
    return tuple(m for m in MODES if m in items)


def shift(batch, dy, dx):
    """``batch`` (N, C, H, W) moved by (dy, dx) pixels, the border filled by reflection."""
    n, c, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (abs(dy),) * 2, (abs(dx),) * 2), mode="reflect")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[:, :, top:top + h, left:left + w]


def views(batch, modes):
    """The augmented copies of ``batch`` (numpy (N, C, H, W)) for ``modes``, identity first."""
    batch = np.asarray(batch)
    out = [batch]
    if "translate" in modes:
        out += [shift(batch, dy, dx) for dy, dx in SHIFTS]
    if "flip" in modes:
        out += [v[:, :, :, ::-1] for v in list(out)]
    return [np.ascontiguousarray(v) for v in out]


def predict(predict_fn, batch, modes):
    """Mean over ``views(batch, modes)`` of ``predict_fn(mx NDArray) -> (N, K)`` probabilities,
    as numpy; without modes just ``predict_fn(batch)``."""
    import mxnet as mx
    if not modes:
        return predict_fn(batch).asnumpy()
    data = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    total = None
    chosen = views(data, modes)
    for view in chosen:
        probs = predict_fn(mx.nd.array(view, dtype=data.dtype)).asnumpy()
        total = probs if total is None else total + probs
    return total / len(chosen)
