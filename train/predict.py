"""Inference from a checkpoint: the inference graph, a checked Module, image preprocessing.

    from train.predict import Predictor
    p = Predictor("runs/r20", 160, stats="cifar10_stats.json")
    p.predict_files(["cat.png"], top_k=5)   # [[(3, 'cat', 0.91), (5, 'dog', 0.04), ...]]

Any MXNet checkpoint works (``prefix-symbol.json`` + ``prefix-NNNN.params`` with
``arg:``/``aux:`` names, as ``mx.model.load_checkpoint`` reads): this project's, MXNet's
examples', or a Gluon ``export()``.  A grouped multi-output symbol (deep supervision) is
evaluated on output 0; a ``SoftmaxOutput`` head becomes a plain ``softmax`` so that no
label is needed (the same probabilities).  Images are read with OpenCV, converted to RGB,
resized so the shorter side is ``resize`` (default: the crop side), centre-cropped to the
image shape and normalised with the stats JSON's per-channel ``mean``/``std`` (0-255 RGB,
as the data package writes them); its ``classes`` name the predictions.

The command line is train/score.py (``--predict``).
"""
import os

import numpy as np

from . import common, runtime
from .checkpoint import CheckpointError, load_params

__all__ = ["PredictError", "data_module", "inference_symbol", "input_name", "check_params", "load_model",
           "make_contexts", "read_checkpoint", "bind_inference", "preprocess_image", "Predictor"]


class PredictError(common.UserError):
    """A checkpoint, image or option that cannot be used for inference (message says why)."""


def data_module(name):
    """A module of the sibling data package (``iterators``, ``recfile``), checkout or installed."""
    import importlib
    data = common.sibling("data")
    return importlib.import_module(data.__name__ + "." + name)


def inference_symbol(sym):
    """Output 0 of ``sym`` with a ``SoftmaxOutput`` head replaced by ``softmax`` (no label).

    Other heads (logits, Gluon exports) are returned unchanged.
    """
    import mxnet as mx
    if len(sym.list_outputs()) > 1:
        sym = sym[0]
    if _op_of(sym) == "SoftmaxOutput":
        attrs = sym.list_attr()
        multi = str(attrs.get("multi_output", "False")).lower() in ("true", "1")
        return mx.sym.softmax(sym.get_children()[0], axis=1 if multi else -1, name=sym.name)
    return sym


def _op_of(sym):
    import json
    graph = json.loads(sym.tojson())
    return graph["nodes"][graph["heads"][0][0]]["op"]


def input_name(sym, arg_params):
    """The single data input: the argument that is neither a parameter nor a label."""
    candidates = [n for n in sym.list_arguments() if n not in arg_params and not n.endswith("label")]
    if len(candidates) != 1:
        if not candidates:
            raise PredictError("the symbol has no data input left: every argument is in the params file")
        raise PredictError("the params file lacks %s: it does not match the symbol (was it saved "
                           "from another network or configuration?)" % _names(candidates))
    return candidates[0]


def check_params(sym, arg_params, aux_params, data_shape, source="the params file"):
    """Raise ``PredictError`` unless the params give every argument/aux state its right shape."""
    name = input_name(sym, arg_params)
    missing_aux = [n for n in sym.list_auxiliary_states() if n not in aux_params]
    if missing_aux:
        raise PredictError("%s does not match the symbol: missing auxiliary state(s) %s"
                           % (source, _names(missing_aux)))
    import mxnet as mx
    try:
        arg_shapes, _, aux_shapes = sym.infer_shape(**{name: data_shape})
    except mx.base.MXNetError as err:
        raise PredictError("input shape %s does not fit the network: %s"
                           % (tuple(data_shape), _first_line(err)))
    wrong = []
    for names, shapes, params in ((sym.list_arguments(), arg_shapes, arg_params),
                                  (sym.list_auxiliary_states(), aux_shapes, aux_params)):
        for n, shape in zip(names, shapes):
            if n in params and tuple(params[n].shape) != tuple(shape):
                wrong.append("%s is %s in the file, the symbol needs %s"
                             % (n, tuple(params[n].shape), tuple(shape)))
    if wrong:
        raise PredictError("%s does not match the symbol for input %s: %s%s (another num_classes, "
                           "depth or width?)" % (source, tuple(data_shape), "; ".join(wrong[:3]),
                                                 " ... (%d more)" % (len(wrong) - 3) if len(wrong) > 3 else ""))
    return name


def _names(names, limit=4):
    names = list(names)
    return ", ".join(names[:limit]) + (" ... (%d more)" % (len(names) - limit) if len(names) > limit else "")


def _first_line(err):
    lines = [l.strip() for l in str(err).splitlines() if l.strip()]
    useful = [l for l in lines if "Check failed" in l or "Error in operator" in l]
    return (useful or lines or ["MXNet error"])[0][:300]


def make_contexts(gpus=None, cpus=None):
    """``--gpus 0,1`` -> [gpu(0), gpu(1)]; otherwise CPU contexts (``--cpus 0`` or default)."""
    import mxnet as mx
    if gpus:
        try:
            ids = [int(g) for g in str(gpus).split(",") if g.strip()]
        except ValueError:
            raise PredictError("--gpus wants a comma-separated list of device ids, got %r" % gpus)
        if mx.context.num_gpus() < max(ids) + 1:
            raise PredictError("--gpus %s asked for, but this MXNet sees %d GPU(s); use --cpus"
                               % (gpus, mx.context.num_gpus()))
        return [mx.gpu(i) for i in ids]
    try:
        ids = [int(c) for c in str(cpus or "0").split(",") if c.strip()]
    except ValueError:
        raise PredictError("--cpus wants a comma-separated list of device ids, got %r" % cpus)
    return [mx.cpu(i) for i in ids] or [mx.cpu()]


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
        if not (isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "heads" in graph):
            raise PredictError("%s is not an MXNet symbol (no 'nodes'/'heads'); expected the "
                               "PREFIX-symbol.json written with the checkpoint" % path)
        try:
            mx.sym.load(path)
        except mx.base.MXNetError as err:
            raise PredictError("MXNet cannot load %s: %s" % (path, _first_line(err)))
    try:
        return load_params(prefix, int(epoch))
    except CheckpointError as err:
        raise PredictError(_first_line(err) if "Traceback" in str(err) else str(err))


def load_model(prefix, epoch, image_shape, batch_size=1, contexts=None):
    """A bound inference ``mx.mod.Module`` for checkpoint ``prefix``/``epoch``.

    Returns ``(module, data_name)``; ``PredictError`` for missing or mismatched files.
    """
    sym, arg_params, aux_params = read_checkpoint(prefix, epoch)
    sym = inference_symbol(sym)
    data_shape = (int(batch_size),) + tuple(image_shape)
    name = check_params(sym, arg_params, aux_params, data_shape,
                        source="%s-%04d.params" % (prefix, int(epoch)))
    return bind_inference(sym, name, data_shape, arg_params, aux_params, contexts), name


#: MXNet reads this when binding; "NONE" switches the oneDNN subgraph fusion off.
SUBGRAPH_ENV = "MXNET_SUBGRAPH_BACKEND"




def bind_inference(sym, data_name, data_shape, arg_params, aux_params, contexts=None, fuse=False):
    """An inference ``mx.mod.Module`` bound for ``data_shape`` with the given parameters.

    ``fuse=False`` (default) binds without MXNet's oneDNN subgraph fusion: in mxnet 1.9.1 that
    fusion (applied to every ``for_training=False`` bind) miscomputes PreAct ResNet's residual
    additions (outputs differ from the training graph and ONNX Runtime by ~1e-2), and it
    brought no measurable speed on ResNet-20 here.  A user-set MXNET_SUBGRAPH_BACKEND wins.
    """
    import mxnet as mx
    module = mx.mod.Module(sym, data_names=(data_name,), label_names=None,
                           context=contexts or [mx.cpu()])
    backend = None if fuse or SUBGRAPH_ENV in os.environ else "NONE"
    with runtime.temporary_env(SUBGRAPH_ENV, backend):
        module.bind(data_shapes=[(data_name, tuple(data_shape))], for_training=False)
    module.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)
    return module


def preprocess_image(path, image_shape, stats=None, resize=None):
    """(C, H, W) float32 of the image file: RGB, shorter side to ``resize``, centre crop, mean/std."""
    import cv2
    channels, height, width = image_shape
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    if not os.path.isfile(path):
        raise PredictError("image %s does not exist" % path)
    image = cv2.imread(path, flag)
    if image is None:
        raise PredictError("cannot decode %s as an image (PNG/JPEG/BMP...)" % path)
    if channels == 1:
        image = image[:, :, None]
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    short = int(resize or max(height, width))
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


class Predictor(object):
    """Top-k predictions of a checkpoint on image files (see the module docstring)."""

    def __init__(self, prefix, epoch, image_shape=None, stats=None, contexts=None, batch_size=8,
                 resize=None):
        try:
            self.stats = data_module("iterators").load_stats(stats) if stats is not None else None
        except ValueError as err:
            raise PredictError(str(err))
        shape = image_shape or (self.stats or {}).get("image_shape") or (3, 32, 32)
        self.image_shape = tuple(int(v) for v in shape)
        self.batch_size = int(batch_size)
        self.resize = resize
        self.module, self.data_name = load_model(prefix, epoch, self.image_shape, self.batch_size,
                                                 contexts)
        self.classes = list((self.stats or {}).get("classes") or [])

    def probabilities(self, images):
        """(N, num_classes) probabilities (or raw outputs) for an (N, C, H, W) float array."""
        import mxnet as mx
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = np.zeros((self.batch_size,) + self.image_shape, np.float32)
            batch[:len(chunk)] = chunk
            self.module.forward(mx.io.DataBatch([mx.nd.array(batch)]), is_train=False)
            out.append(self.module.get_outputs()[0].asnumpy()[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def predict_files(self, paths, top_k=5):
        """``[[(class index, class name, probability), ...] per file]``, best first."""
        images = np.stack([preprocess_image(p, self.image_shape, self.stats, self.resize)
                           for p in paths])
        probs = self.probabilities(images)
        k = max(1, min(int(top_k), probs.shape[1]))
        results = []
        for row in probs:
            order = np.argsort(-row)[:k]
            results.append([(int(i), self.class_name(int(i)), float(row[i])) for i in order])
        return results

    def class_name(self, index):
        return self.classes[index] if index < len(self.classes) else str(index)
