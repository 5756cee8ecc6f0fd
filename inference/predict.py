"""Inference from a checkpoint: the inference graph, a checked Module, image preprocessing.

    from mxcnn.inference.predict import Predictor
    p = Predictor("runs/r20", 160)          # mean/std, image shape, class names from the checkpoint
    p.predict_files(["cat.png"], top_k=5)   # [[(3, 'cat', 0.91), (5, 'dog', 0.04), ...]]

Any MXNet checkpoint works (``prefix-symbol.json`` + ``prefix-NNNN.params`` with
``arg:``/``aux:`` names, as ``mx.model.load_checkpoint`` reads): this project's, MXNet's
examples', or a Gluon ``export()``.  A grouped multi-output symbol (deep supervision) is
evaluated on output 0; a ``SoftmaxOutput`` head becomes a plain ``softmax`` so that no
label is needed (the same probabilities).  Images are read by ``mxcnn.data.images`` (sizes
checked from the header against ``max_pixels`` before decoding, truncated files refused) as RGB,
resized so the shorter side is ``resize`` (default: the crop side), centre-cropped to the
image shape and normalised with per-channel ``mean``/``std`` (0-255 RGB).

Preprocessing comes from, in this order: an explicit stats JSON (``stats=``, the
``NAME_stats.json`` data/prepare_cifar.py writes); the ``preprocess`` record the trainer
stores in every ``PREFIX-NNNN.json`` (:func:`preprocess_record`: the training data's
mean/std, the image shape and class names); else none (raw pixels, classes as numbers).

The command line is inference/score.py (``--predict``).
"""
import os

import numpy as np

from mxcnn import common
from mxcnn.common import runtime
from mxcnn.data import stats as data_stats
from mxcnn.data.errors import DataError
from mxcnn.data.images import MAX_IMAGE_PIXELS, read_image
from mxcnn.graph import channel_pad
from mxcnn.graph.inference import inference_symbol
from mxcnn.inference.checkpoint import CheckpointError, load_params, load_state
from mxcnn.symbols.layers import as_image_shape

__all__ = ["PredictError", "inference_symbol", "input_name", "check_params",
           "check_batch", "load_model", "make_contexts", "read_checkpoint", "bind_inference", "numpy_forward",
           "preprocess_record", "checkpoint_preprocess", "resolve_preprocess", "preprocess_image",
           "Predictor"]

#: MXNet 1.9.1 indexes tensors with int32 (without the large-tensor build): "larger than 2^31".
MAX_ELEMENTS = 2 ** 31 - 1


class PredictError(common.UserError):
    """A checkpoint, image or option that cannot be used for inference (message says why)."""


def input_name(sym, arg_params):
    """The single data input: the argument that is neither a parameter nor a label."""
    candidates = [n for n in sym.list_arguments() if n not in arg_params and not n.endswith("label")]
    if len(candidates) != 1:
        if not candidates:
            raise PredictError("the symbol has no data input left: every argument is in the params file")
        raise PredictError("the params file lacks %s: it does not match the symbol (was it saved "
                           "from another network or configuration?)" % common.short_list(candidates, 4))
    return candidates[0]


def check_params(sym, arg_params, aux_params, data_shape, source="the params file"):
    """Raise ``PredictError`` unless the params give every argument/aux state its right shape."""
    name = input_name(sym, arg_params)
    missing_aux = [n for n in sym.list_auxiliary_states() if n not in aux_params]
    if missing_aux:
        raise PredictError("%s does not match the symbol: missing auxiliary state(s) %s"
                           % (source, common.short_list(missing_aux, 4)))
    import mxnet as mx
    _check_elements(data_shape, int(np.prod(data_shape)))
    try:
        arg_shapes, _, aux_shapes = _infer_shape(sym, name, data_shape)
    except mx.base.MXNetError as err:
        raise PredictError("input shape %s does not fit the network: %s"
                           % (tuple(data_shape), common.error_line(err, 300)))
    wrong = []
    for names, shapes, params in ((sym.list_arguments(), arg_shapes, arg_params),
                                  (sym.list_auxiliary_states(), aux_shapes, aux_params)):
        for n, shape in zip(names, shapes):
            if n in params and tuple(params[n].shape) != tuple(shape):
                wrong.append("%s is %s in the file, the symbol needs %s"
                             % (n, tuple(params[n].shape), tuple(shape)))
    if wrong:
        more = " ... (%d more)" % (len(wrong) - 3) if len(wrong) > 3 else ""
        raise PredictError("%s does not match the symbol for input %s: %s%s (another num_classes, "
                           "depth or width?)" % (source, tuple(data_shape), "; ".join(wrong[:3]), more))
    return name


def _available_bytes():
    """``MemAvailable`` of /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_elements(data_shape, elements, flag="--batch-size"):
    if elements > MAX_ELEMENTS:
        raise PredictError("%s %d with images %s makes a tensor of %d elements, over MXNet's "
                           "limit of 2^31; lower %s or the image size" % (
                               flag, data_shape[0], "x".join(map(str, data_shape[1:])), elements, flag))


def _infer_shape(sym, data_name, data_shape, flag="--batch-size"):
    """``sym.infer_shape`` for the data input; PredictError for a tensor over 2^31 elements
    (mxnet 1.9.1 raises a bare ``Exception`` for it)."""
    try:
        return sym.infer_shape(**{data_name: tuple(data_shape)})
    except Exception as err:  # noqa: B902  (only MXNet's int32 size check is turned into a message)
        if "2^31" not in str(err):
            raise
        raise PredictError("%s %d with images %s makes a tensor inside the network larger than "
                           "MXNet's limit of 2^31 elements; lower %s" % (
                               flag, data_shape[0], "x".join(map(str, data_shape[1:])), flag))


def check_batch(sym, data_name, data_shape, num_contexts=1, flag="--batch-size", memory=True):
    """``PredictError`` for a batch MXNet cannot bind: a tensor over 2^31 elements (int32
    indexing) or, with ``memory``, more than ``MemAvailable`` by a lower bound (the input batch,
    one copy of the weights per device and each device's largest activation, float32)."""
    batch_elements = int(np.prod(data_shape))
    _check_elements(data_shape, batch_elements, flag)
    per_device = (-(-int(data_shape[0]) // int(num_contexts)),) + tuple(data_shape[1:])
    _, out_shapes, _ = _infer_shape(sym.get_internals(), data_name, per_device, flag)
    arg_shapes, _, aux_shapes = _infer_shape(sym, data_name, per_device, flag)
    largest = max([int(np.prod(s)) for s in out_shapes] + [1])
    _check_elements(per_device, largest, flag)
    weights = sum(int(np.prod(s)) for s in list(arg_shapes) + list(aux_shapes)) - int(np.prod(per_device))
    needed = 4 * (batch_elements + num_contexts * (weights + largest))
    available = _available_bytes() if memory else None
    if available is not None and needed > available:
        raise PredictError("%s %d needs at least %.1f GB for %d device(s), but only %.1f GB of "
                           "memory is available; lower %s" % (flag, data_shape[0], needed / 2.0 ** 30,
                                                              num_contexts, available / 2.0 ** 30, flag))


def _context_count(cpus):
    """``--cpus`` as train_cifar.py reads it: a positive number of CPU contexts."""
    if cpus is None or isinstance(cpus, int):
        return cpus
    text = str(cpus).strip()
    if not text.isdigit():
        raise PredictError("--cpus counts CPU contexts, as in train_cifar.py (--cpus 2 runs on "
                           "cpu(0) and cpu(1)); got %r: give a number, e.g. --cpus 2" % (cpus,))
    return int(text)


def make_contexts(gpus=None, cpus=None):
    """Devices as train_cifar.py reads them: ``--gpus 0,1`` -> [gpu(0), gpu(1)]; ``--cpus N``
    -> [cpu(0), ..., cpu(N-1)]; neither -> [cpu()].  ``common.UserError`` for a GPU this
    MXNet lacks or a count out of range."""
    from mxcnn.common import devices
    return devices.check_gpus(devices.parse_devices(gpus, _context_count(cpus)))


def read_checkpoint(prefix, epoch):
    """``(symbol, arg_params, aux_params)`` of a checkpoint; ``PredictError`` naming the bad file."""
    import json

    import mxnet as mx
    path = "%s-symbol.json" % prefix
    if os.path.isfile(path):
        try:
            with open(path) as f:
                graph = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise PredictError("%s is not JSON (%s); expected an MXNet symbol file" % (path, err))
        except OSError as err:
            raise PredictError("cannot read %s (%s)" % (path, err.strerror))
        if not (isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "heads" in graph):
            raise PredictError("%s is not an MXNet symbol (no 'nodes'/'heads'); expected the "
                               "PREFIX-symbol.json written with the checkpoint" % path)
        try:
            mx.sym.load(path)
        except mx.base.MXNetError as err:
            raise PredictError("MXNet cannot load %s: %s" % (path, common.error_line(err, 300)))
    try:
        return load_params(prefix, int(epoch))
    except CheckpointError as err:
        raise PredictError(str(err))


def load_model(prefix, epoch, image_shape, batch_size=1, contexts=None, dtype="float32"):
    """A bound inference ``mx.mod.Module`` for checkpoint ``prefix``/``epoch`` (float32, an
    int8 checkpoint of inference/quantize.py as it is, or float32 run in ``dtype``).

    Returns ``(module, data_name)``; ``PredictError`` for missing or mismatched files, or a
    batch that cannot be bound (:func:`check_batch`).
    """
    sym, arg_params, aux_params = read_checkpoint(prefix, epoch)
    sym = inference_symbol(sym)
    data_shape = (int(batch_size),) + tuple(image_shape)
    name = check_params(sym, arg_params, aux_params, data_shape,
                        source="%s-%04d.params" % (prefix, int(epoch)))
    check_batch(sym, name, data_shape, len(contexts or [None]))
    return bind_inference(sym, name, data_shape, arg_params, aux_params, contexts, dtype=dtype), name


#: MXNet reads this when binding; "NONE" switches the oneDNN subgraph fusion off.
SUBGRAPH_ENV = "MXNET_SUBGRAPH_BACKEND"


def bind_inference(sym, data_name, data_shape, arg_params, aux_params, contexts=None, fuse=True,
                   dtype="float32"):
    """An inference ``mx.mod.Module`` bound for ``data_shape`` with the given parameters.

    On oneDNN CPUs with ``fuse`` (default) the bind uses MXNet's oneDNN subgraph fusion
    (Convolution + BatchNorm + ReLU + sum), on the graph of ``graph.onednn_inference.
    guard_fusion``: mxnet 1.9.1's fusion computes PreAct ResNet's CIFAR layout wrongly (its
    stem convolution feeds a BatchNorm and the shortcut), and the guard cuts exactly that
    pattern; every registered family then scores the same fused as unfused
    (tests/inference/test_int8.py).  Fused, ResNet-20/56 ran 1.46x/1.42x the unfused graph
    at batch 64 and 1.63x/1.62x at batch 1 (bench/inference.py, 1 thread, quiet Xeon with
    avx512_vnni).  ``fuse=False`` binds without it; a user-set
    MXNET_SUBGRAPH_BACKEND wins.  ``dtype='bfloat16'`` converts the graph with MXNet's AMP
    as the trainer does (graph.precision; float32 stem, weights and outputs; on oneDNN 2.4
    its bfloat16 convolutions ran at 0.5-0.6x float32 on that Xeon).  An int8
    graph (inference/quantize.py, already partitioned) is bound as it is.
    The batch is split over ``contexts``: it must hold at least one image per context.
    """
    import mxnet as mx

    from mxcnn.graph import onednn_inference, precision
    contexts = contexts or [mx.cpu()]
    if int(data_shape[0]) < len(contexts):
        raise ValueError("batch %d is smaller than the %d contexts" % (data_shape[0], len(contexts)))
    int8 = onednn_inference.is_partitioned(sym)
    if int8 and dtype != "float32":
        raise PredictError("an int8 checkpoint runs as it is: drop --dtype %s" % dtype)
    if dtype != "float32":
        precision.check_supported(dtype, contexts)
    sym, padding = (sym, None) if int8 else _padded_for_onednn(sym, data_name, data_shape, contexts)
    fuse = fuse and not int8 and _onednn_contexts(contexts)
    if fuse:
        sym, _ = onednn_inference.guard_fusion(sym, (onednn_inference.FUSION_BACKEND,))
    if dtype != "float32":
        sym = precision.training_symbol(sym, dtype)
    module = mx.mod.Module(sym, data_names=(data_name,), label_names=None, context=contexts)
    backend = None if fuse or SUBGRAPH_ENV in os.environ else "NONE"
    try:
        with runtime.temporary_env(SUBGRAPH_ENV, backend):
            module.bind(data_shapes=[(data_name, tuple(data_shape))], for_training=False)
    except mx.base.MXNetError as err:  # e.g. out of memory
        raise PredictError("MXNet cannot bind the network for input %s on %d device(s): %s; lower "
                           "--batch-size" % (tuple(data_shape), len(contexts), common.error_line(err, 300)))
    if padding:
        aux_params = padding.pad_params(aux_params)
    module.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)
    return module


def numpy_forward(module):
    """``run(batch) -> output 0`` for a ``module`` bound by :func:`bind_inference`: a float32
    numpy batch of the bound shape in, a numpy array out.

    On one context the batch goes straight into the executor's bound input and the executor
    runs alone, without the Module's batch slicing and its extra NDArray and copy; at batch 1
    that took ResNet-20's median latency from 1.0-1.3 ms to 0.8-0.9 ms (1 thread, Xeon with
    avx512_vnni).  Several contexts go through ``Module.forward``, which splits the batch.
    """
    import mxnet as mx
    executors = module._exec_group.execs
    if len(executors) != 1:
        def run_split(batch):
            module.forward(mx.io.DataBatch([mx.nd.array(batch)]), is_train=False)
            return module.get_outputs()[0].asnumpy()
        return run_split
    executor = executors[0]
    data, output = executor.arg_dict[module.data_names[0]], executor.outputs[0]

    def run(batch):
        data._sync_copyfrom(batch)
        executor.forward(is_train=False)
        return output.asnumpy()
    return run


def _onednn_contexts(contexts):
    from mxcnn.graph.training import onednn_cpus
    return onednn_cpus(contexts)


def _padded_for_onednn(sym, data_name, data_shape, contexts):
    """``(symbol, AuxPadding or None)``: on oneDNN CPUs, ``sym`` with DenseNet's channels
    padded to oneDNN's block (graph.channel_pad, as the trainer binds it; DenseNet-BC-100
    scores 1.8x faster on Zen 5), its padded BatchNorm statistics mapped by ``AuxPadding``."""
    from mxcnn.graph.training import onednn_cpus
    if not onednn_cpus(contexts):
        return sym, None
    padded, count = channel_pad.pad_channels(sym, **{data_name: tuple(data_shape)})
    return (padded, channel_pad.AuxPadding.of(padded)) if count else (sym, None)


# ------------------------------------------------------------------ preprocessing

def preprocess_record(image_shape, stats=None, num_classes=None, augmentation="cifar"):
    """What inference must repeat of a run's input pipeline, stored in each ``PREFIX-NNNN.json``
    under ``preprocess``: ``image_shape``, per-channel ``mean``/``std`` (0-255 RGB; 0 and 1 when
    the run had no stats, as data.iterators then does not normalise), ``classes`` (names or
    None), ``num_classes``, the ``stats_file`` it came from, and the ``augment`` it trained
    with: after ``imagenet`` evaluation resizes the shorter side to ``eval_resize`` before
    the centre crop."""
    from mxcnn.data.epoch_iters import eval_resize
    stats = stats or {}
    return {"image_shape": [int(v) for v in image_shape], "augment": augmentation,
            "eval_resize": eval_resize(image_shape) if augmentation == "imagenet" else None,
            "mean": [float(v) for v in stats.get("mean") or (0.0, 0.0, 0.0)],
            "std": [float(v) for v in stats.get("std") or (1.0, 1.0, 1.0)],
            "classes": list(stats["classes"]) if stats.get("classes") else None,
            "num_classes": int(num_classes or stats.get("num_classes") or 0) or None,
            "stats_file": os.path.abspath(stats["path"]) if stats.get("path") else None}


def checkpoint_preprocess(prefix, epoch):
    """The ``preprocess`` record of checkpoint ``epoch`` as a stats-like dict, or None (older
    checkpoints, MXNet's own).  ``PredictError`` when the record or its ``.json`` is damaged."""
    try:
        record = load_state(prefix, int(epoch)).get("preprocess")
    except CheckpointError as err:
        raise PredictError(str(err))
    if record is None:
        return None
    try:
        stats = data_stats.load_stats(dict(record))
        stats["image_shape"] = list(as_image_shape(record["image_shape"]))
    except (common.UserError, KeyError, TypeError) as err:
        raise PredictError("the preprocess record of %s-%04d.json is damaged (%s); pass --stats "
                           "with the training data's NAME_stats.json" % (prefix, int(epoch), err))
    stats["_source"] = "%s-%04d.json" % (prefix, int(epoch))
    return stats


def resolve_preprocess(prefix, epoch, stats=None):
    """The stats dict inference uses: ``stats`` (a path or dict) when given, else the
    checkpoint's own record, else None.  ``PredictError`` for unusable files."""
    if stats is None:
        return checkpoint_preprocess(prefix, epoch)
    try:
        return data_stats.load_stats(stats)
    except common.UserError as err:
        raise PredictError(str(err))


def _read_image(path, grey, max_pixels):
    """uint8 (H, W, 3) RGB or (H, W, 1) grey of the image file; PredictError naming the problem."""
    try:
        return read_image(path, max_pixels=max_pixels, grey=grey)
    except DataError as err:
        raise PredictError(str(err)) from None


def preprocess_image(path, image_shape, stats=None, resize=None, max_pixels=MAX_IMAGE_PIXELS):
    """(C, H, W) float32 of the image file: RGB, shorter side to ``resize`` (default: the
    stats' ``eval_resize``, else the crop side), centre crop, mean/std.  A file declaring more
    than ``max_pixels`` (width x height) is refused before decoding."""
    import cv2
    channels, height, width = image_shape
    image = _read_image(path, channels == 1, max_pixels)
    short = int(resize or (stats or {}).get("eval_resize") or max(height, width))
    h, w = image.shape[:2]
    scale = short / float(min(h, w))
    if (round(h * scale), round(w * scale)) != (h, w):
        new_h, new_w = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1
                           else cv2.INTER_LINEAR)
        if image.ndim == 2:
            image = image[:, :, None]
    h, w = image.shape[:2]
    if h < height or w < width:
        image = cv2.resize(image, (max(w, width), max(h, height)))
        image = image[:, :, None] if image.ndim == 2 else image
        h, w = image.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    image = image[top:top + height, left:left + width].astype(np.float32)
    if stats is not None:
        mean = np.asarray(stats["mean"], np.float32)[:channels]
        std = np.asarray(stats["std"], np.float32)[:channels]
        image = (image - mean) / std
    return image.transpose(2, 0, 1)


class Predictor:
    """Top-k predictions of a checkpoint on image files (see the module docstring).

    ``stats``: a stats JSON path or dict; None uses the checkpoint's own preprocess record
    (``self.stats`` stays None when there is neither).  The batch is rounded up to a multiple
    of the contexts; short batches are padded with zeros and the padding dropped.  Image
    files over ``max_pixels`` (width x height) are refused before decoding.
    """

    def __init__(self, prefix, epoch, image_shape=None, stats=None, contexts=None, batch_size=8,
                 resize=None, max_pixels=MAX_IMAGE_PIXELS, dtype="float32"):
        self.stats = resolve_preprocess(prefix, epoch, stats)
        shape = image_shape or (self.stats or {}).get("image_shape") or (3, 32, 32)
        self.image_shape = tuple(int(v) for v in shape)
        devices = len(contexts or [None])
        self.batch_size = -(-max(1, int(batch_size)) // devices) * devices
        self.resize = resize
        self.max_pixels = max_pixels
        self.module, self.data_name = load_model(prefix, epoch, self.image_shape, self.batch_size,
                                                 contexts, dtype=dtype)
        self.classes = list((self.stats or {}).get("classes") or [])
        self._forward = numpy_forward(self.module)

    def probabilities(self, images):
        """(N, num_classes) probabilities (or raw outputs) for an (N, C, H, W) float array."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = np.zeros((self.batch_size,) + self.image_shape, np.float32)
            batch[:len(chunk)] = chunk
            out.append(self._forward(batch)[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def predict_files(self, paths, top_k=5):
        """``[[(class index, class name, probability), ...] per file]``, best first."""
        images = np.stack([preprocess_image(p, self.image_shape, self.stats, self.resize,
                                            self.max_pixels) for p in paths])
        probs = self.probabilities(images)
        k = max(1, min(int(top_k), probs.shape[1]))
        results = []
        for row in probs:
            order = np.argsort(-row)[:k]
            results.append([(int(i), self.class_name(int(i)), float(row[i])) for i in order])
        return results

    def class_name(self, index):
        return self.classes[index] if index < len(self.classes) else str(index)
