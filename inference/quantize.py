"""Calibrated int8 checkpoints for oneDNN CPUs: MXNet's own quantization, made right for every family.

    python inference/quantize.py --model-prefix runs/r56/m --load-epoch 30 \\
        --calib-data ~/.mxnet/datasets/cifar10/cifar10_train.rec --num-calib-batches 10
    python inference/score.py --model-prefix runs/r56/m-int8 --load-epoch 30 --data-val .../cifar10_val.rec

Reads checkpoint ``PREFIX-NNNN`` and writes ``PREFIX-int8-symbol.json`` and
``PREFIX-int8-NNNN.params`` (with ``-int8-inference-symbol.json`` and the ``-int8-NNNN.json``
record: the source checkpoint's ``preprocess`` record and how it was quantized), through
inference/checkpoint.py, so ``score.py``, ``--predict`` and the inspector take
``--model-prefix PREFIX-int8`` as any checkpoint.

The flow is MXNet 1.9.1's (its example/quantization): the inference graph partitioned with
the ``MKLDNN_QUANTIZE`` backend, ``mx.contrib.quantization.quantize_model`` with
``quantized_dtype='auto'`` (uint8 after ReLUs, int8 elsewhere) and ``naive`` (min/max) or
``entropy`` (KL-divergence) calibration of every layer's output range on the calibration
images, then partitioned again (requantize/dequantize fused into the convolutions).  Before
it, ``graph.onednn_inference`` guards the one fusion pattern MXNet computes wrongly and keeps
grouped convolutions (ResNeXt) in float32, since their int8 kernels are wrong
(``--exclude`` adds layers by name: any layer of the float32 graph, e.g. ``stem_conv``).

Calibration images must not be the images the int8 model is scored on: ``--calib-data``
takes the first ``--num-calib-batches`` x ``--calib-batch-size`` records of any .rec, so give
the *training* .rec (or a split held out from the test set), never the test .rec you score.
They are preprocessed as the checkpoint was trained (its mean/std, no augmentation).
"""

import os
import sys

from mxcnn import common
from mxcnn.common import runtime

runtime.configure()  # before mxnet is imported

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mxcnn.data import iterators, recfile  # noqa: E402
from mxcnn.graph import onednn_inference  # noqa: E402
from mxcnn.inference import checkpoint  # noqa: E402
from mxcnn.inference.predict import PredictError, check_params, inference_symbol, read_checkpoint  # noqa: E402

__all__ = [
    "CALIB_MODES",
    "INT8_SUFFIX",
    "QuantizeError",
    "int8_prefix",
    "calibration_batches",
    "quantize_symbol",
    "quantize_checkpoint",
    "main",
]

PROG = "quantize.py"
CALIB_MODES = ("naive", "entropy")
INT8_SUFFIX = "-int8"


class QuantizeError(common.UserError):
    """A checkpoint, calibration file or option the int8 conversion cannot use."""


def int8_prefix(prefix: str) -> str:
    """Where the int8 checkpoint of ``prefix`` goes: ``PREFIX-int8``."""
    return prefix + INT8_SUFFIX


def calibration_batches(
    calib_rec: str, image_shape, stats, batch_size: int, num_batches: int, prefix: str = "", epoch: int = 0
) -> np.ndarray:
    """The first ``batch_size * num_batches`` images of ``calib_rec`` (fewer if it holds fewer),
    (N, C, H, W) float32, preprocessed as the checkpoint's validation data."""
    from mxcnn.inference.score import _evaluation, rec_preprocess

    if not os.path.isfile(calib_rec):
        raise QuantizeError(
            "calibration file %s does not exist; give a .rec (the training "
            "data's, not the test set you score)" % calib_rec
        )
    total = recfile.count_records(calib_rec)
    if total == 0:
        raise QuantizeError("calibration file %s holds no records" % calib_rec)
    stats = rec_preprocess(prefix, epoch, calib_rec, stats) if prefix else stats
    batch = max(1, min(int(batch_size), total))
    _, val_iter = iterators.get_rec_iters(
        None,
        calib_rec,
        batch,
        tuple(image_shape),
        stats=stats,
        augmentation=_evaluation(prefix, epoch, stats),
    )
    images, seen = [], 0
    for data_batch in val_iter:
        valid = min(batch - int(data_batch.pad or 0), total - seen)
        images.append(data_batch.data[0].asnumpy()[:valid])
        seen += valid
        if len(images) >= num_batches or seen >= total:
            break
    return np.concatenate(images)


def _check_excluded(sym, names):
    """``names`` that are layers of ``sym``; QuantizeError naming the unknown ones."""
    layers = {node["name"] for node in onednn_inference.symbol_graph(sym)["nodes"] if node["op"] != "null"}
    unknown = [name for name in names if name not in layers]
    if unknown:
        convs = [n["name"] for n in onednn_inference.symbol_graph(sym)["nodes"] if n["op"] == "Convolution"]
        raise QuantizeError(
            "--exclude %s: no such layer in the network; layers are named as in "
            "PREFIX-symbol.json, e.g. %s" % (", ".join(unknown), ", ".join(convs[:3]))
        )
    return list(names)


def quantize_symbol(
    sym, arg_params, aux_params, calib_images, calib_mode="naive", exclude=(), batch_size=32, data_name="data"
):
    """``(int8 symbol, arg_params, aux_params, {'excluded': [...], 'cut': [...]})`` for the
    float32 inference graph ``sym`` (data -> probabilities), calibrated on ``calib_images``
    (N, C, H, W).  The symbol is partitioned for oneDNN; bind it without another pass."""
    import mxnet as mx

    if calib_mode not in CALIB_MODES:
        raise QuantizeError("--calib-mode %r: choose one of %s" % (calib_mode, ", ".join(CALIB_MODES)))
    shape = (int(batch_size),) + tuple(calib_images.shape[1:])
    sym, _ = onednn_inference.plain_concats(sym)
    sym, cut = onednn_inference.guard_fusion(sym)
    sym, activation_cuts = onednn_inference.guard_int8_activations(sym)
    cut = cut + activation_cuts
    excluded = onednn_inference.int8_excluded_layers(sym, **{data_name: shape}) + _check_excluded(
        sym, exclude
    )
    fused = sym.get_backend_symbol(onednn_inference.QUANTIZE_BACKEND)
    fused_excluded, missing = onednn_inference.fused_node_names(fused, excluded)
    if missing:
        raise AssertionError("layers %s vanished in the partitioned graph; this is a bug" % missing)
    batch = min(int(batch_size), len(calib_images))
    calib = mx.io.NDArrayIter(
        calib_images, batch_size=batch, data_name=data_name, last_batch_handle="discard"
    )
    with runtime.temporary_env("MXNET_SUBGRAPH_BACKEND", "NONE"):
        qsym, qargs, qauxs = mx.contrib.quantization.quantize_model(
            fused,
            arg_params,
            aux_params,
            data_names=(data_name,),
            label_names=(),
            ctx=mx.cpu(),
            excluded_sym_names=fused_excluded,
            calib_mode=calib_mode,
            calib_data=calib,
            num_calib_examples=len(calib_images) // batch * batch,
            quantized_dtype="auto",
        )
    qsym = qsym.get_backend_symbol(onednn_inference.QUANTIZE_BACKEND)
    return qsym, qargs, qauxs, {"excluded": excluded, "cut": cut}


def quantize_checkpoint(
    prefix,
    epoch,
    calib_data,
    num_calib_batches=10,
    calib_batch_size=32,
    calib_mode="naive",
    exclude=(),
    stats=None,
    image_shape=None,
    output=None,
):
    """Write the int8 checkpoint of ``prefix``/``epoch`` (module docstring) under ``output``
    (default ``PREFIX-int8``); return ``{'prefix', 'paths', 'images', 'excluded', 'seconds'}``."""
    from mxcnn.inference.predict import checkpoint_preprocess

    start = time.time()
    if int(num_calib_batches) < 1 or int(calib_batch_size) < 1:
        raise QuantizeError("--num-calib-batches and --calib-batch-size must be at least 1")
    sym, arg_params, aux_params = read_checkpoint(prefix, epoch)
    sym = inference_symbol(sym)
    if onednn_inference.is_partitioned(sym):
        raise QuantizeError("%s-symbol.json is already quantized; give the float32 checkpoint" % prefix)
    record = checkpoint_preprocess(prefix, epoch)
    shape = tuple(image_shape or (record or {}).get("image_shape") or (3, 32, 32))
    data_name = check_params(
        sym, arg_params, aux_params, (1,) + shape, source="%s-%04d.params" % (prefix, int(epoch))
    )
    images = calibration_batches(
        calib_data, shape, stats, calib_batch_size, int(num_calib_batches), prefix, epoch
    )
    qsym, qargs, qauxs, info = quantize_symbol(
        sym, arg_params, aux_params, images, calib_mode, exclude, calib_batch_size, data_name
    )
    state = dict(checkpoint.load_state(prefix, int(epoch)))
    state = {key: state[key] for key in ("preprocess", "network") if key in state}
    state["quantization"] = {
        "source": "%s-%04d" % (os.path.abspath(prefix), int(epoch)),
        "calib_data": os.path.abspath(calib_data),
        "calib_images": len(images),
        "calib_mode": calib_mode,
        "float32_layers": info["excluded"],
        "fusion_cuts": info["cut"],
        "quantized_dtype": "auto",
    }
    out = output or int8_prefix(prefix)
    paths = checkpoint.save_checkpoint(out, int(epoch), qsym, qargs, qauxs, state=state)
    return {
        "prefix": out,
        "paths": paths,
        "images": len(images),
        "excluded": info["excluded"],
        "seconds": time.time() - start,
    }


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a calibrated int8 copy of a checkpoint (oneDNN CPUs).",
        epilog="Calibration images are the first N x B records of --calib-data: give the "
        "training .rec or a held-out split, never the test set you score the int8 model on.",
    )
    parser.add_argument("--model-prefix", required=True, help="float32 checkpoint prefix")
    parser.add_argument("--load-epoch", type=int, required=True, help="N of PREFIX-NNNN.params")
    parser.add_argument(
        "--calib-data",
        required=True,
        metavar="REC",
        help="calibration .rec (e.g. the training .rec; not the scored test set)",
    )
    parser.add_argument("--num-calib-batches", type=int, default=10)
    parser.add_argument("--calib-batch-size", type=int, default=32)
    parser.add_argument(
        "--calib-mode",
        default="naive",
        choices=CALIB_MODES,
        help="naive: layer output min/max; entropy: KL-optimal thresholds",
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="NAME",
        help="layers to keep in float32 (names of PREFIX-symbol.json)",
    )
    parser.add_argument("--stats", help="stats JSON (mean/std); default: the checkpoint's own")
    parser.add_argument("--image-shape", help="C,H,W (default: the checkpoint's)")
    parser.add_argument("--output", help="output prefix (default PREFIX-int8)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mxcnn.symbols.layers import as_image_shape

    try:
        shape = as_image_shape(args.image_shape) if args.image_shape else None
        result = quantize_checkpoint(
            args.model_prefix,
            args.load_epoch,
            args.calib_data,
            args.num_calib_batches,
            args.calib_batch_size,
            args.calib_mode,
            args.exclude,
            args.stats,
            shape,
            args.output,
        )
    except (common.UserError, PredictError) as err:
        return common.cli_error(PROG, err)
    print(
        "%s: wrote %s-symbol.json and %s (%s calibration on %d images, %.1f s)%s"
        % (
            PROG,
            result["prefix"],
            os.path.basename(result["paths"]["params"]),
            args.calib_mode,
            result["images"],
            result["seconds"],
            "; float32 layers: " + ", ".join(result["excluded"]) if result["excluded"] else "",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
