"""Data-dependent initialisation: parameters a symbol marks with ``__data_init__``.

A network asks for it with a Variable attribute, e.g. airbench's frozen whitening conv
(``symbols/airbench.py``: ``__data_init__='patch_whitening'``).  The trainer calls
:func:`apply` once on a fresh run (never on a resume: the checkpoint holds the values) with
training images normalised as the network sees them, unaugmented where the iterator allows
(the in-memory backend), else the first augmented batches.
"""
import numpy as np

from mxcnn import common

__all__ = ["requested", "sample_images", "apply", "SAMPLE_IMAGES"]

#: Images the whitening statistics are computed from (the paper uses 5,000).
SAMPLE_IMAGES = 5000


def _initializers():
    from mxcnn.symbols import airbench
    return {airbench.DATA_INIT: airbench.whitening_weight}


def requested(sym):
    """``{parameter name: method}`` of the arguments of ``sym`` marked ``__data_init__``."""
    return {name: attrs["__data_init__"] for name, attrs in sym.attr_dict().items()
            if "__data_init__" in attrs and name in sym.list_arguments()}


def sample_images(train_iter, count=SAMPLE_IMAGES):
    """Float32 (n <= count, C, H, W) training images, normalised as the iterator serves them.

    The in-memory iterator's stored images are taken unaugmented (centre crop to its
    data shape); any other iterator gives its first batches (then it is reset).
    """
    images = getattr(train_iter, "images", None)
    if images is not None and hasattr(train_iter, "_mean"):
        channels, height, width = train_iter.data_shape
        top = (images.shape[1] - height) // 2
        left = (images.shape[2] - width) // 2
        crop = images[:count, top:top + height, left:left + width].transpose(0, 3, 1, 2)
        out = crop.astype(np.float32)
        out -= train_iter._mean
        out *= train_iter._inv_std
        return out
    batches, seen = [], 0
    train_iter.reset()
    for batch in train_iter:
        batches.append(batch.data[0].asnumpy())
        seen += batches[-1].shape[0]
        if seen >= count:
            break
    train_iter.reset()
    return np.concatenate(batches)[:count]


def apply(sym, arg_params, images, logger=None):
    """Set every ``__data_init__`` parameter of ``sym`` in ``arg_params`` from ``images``;
    returns the names set.  ``common.UserError`` for a method this trainer does not know."""
    import mxnet as mx
    methods = _initializers()
    done = []
    for name, method in sorted(requested(sym).items()):
        if method not in methods:
            raise common.UserError("%s asks for data initialisation %r, which this trainer does "
                                   "not know (known: %s)" % (name, method, ", ".join(methods)))
        value = methods[method](images)
        if tuple(value.shape) != tuple(arg_params[name].shape):
            raise ValueError("%s: %s gave shape %s, the network needs %s"
                             % (name, method, value.shape, arg_params[name].shape))
        arg_params[name] = mx.nd.array(value, ctx=mx.cpu())
        done.append(name)
        if logger is not None:
            logger.info("data init: %s from %d training images (%s)", name, len(images), method)
    return done
