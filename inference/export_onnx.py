"""Export a checkpoint to ONNX with MXNet's own exporter and check it with ONNX Runtime.

    python inference/export_onnx.py --model-prefix runs/r20 --load-epoch 160
    python inference/export_onnx.py --model-prefix runs/r50 --load-epoch 90 --image-shape 3,224,224 \\
        --output r50.onnx --dynamic-batch

The inference graph is output 0 with ``softmax`` instead of ``SoftmaxOutput`` (see
inference/predict.py).  ``mx.onnx.export_model`` writes the model (its converters are opset
12/13; the file declares the installed onnx's opset, 20 for onnx 1.15); unless
``--no-verify``, ONNX Runtime runs it on seeded random input and its outputs must match
MXNet's within ``--tolerance`` (1e-4, max absolute difference) before the file is moved
into place (written atomically: a failed export never leaves a file under the real name).

Needs ``onnx`` and ``onnxruntime`` versions that mxnet 1.9.1's exporter works with
(it uses ``onnx.mapping``, removed in onnx 1.16): onnx==1.15.0, onnxruntime==1.18.1.
"""
import os
import sys

from mxcnn import common
from mxcnn.common import runtime

runtime.configure()  # before mxnet is imported

import argparse  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402

from mxcnn.graph.symbol_json import is_true, symbol_graph  # noqa: E402
from mxcnn.inference.predict import (  # noqa: E402
    PredictError,
    bind_inference,
    check_batch,
    check_params,
    checkpoint_preprocess,
    inference_symbol,
    read_checkpoint,
)

__all__ = ["ExportError", "exportable_symbol", "export_checkpoint", "verify_onnx", "main"]

PROG = "export_onnx.py"
DEFAULT_TOLERANCE = 1e-4


#: What exports, measured with tests/train/test_onnx.py and a sweep over every registered
#: network (random weights, ONNX Runtime 1.18.1 vs MXNet's training graph, max |diff| <= 1e-4).
SUPPORT = (
    ("resnet, se_resnet", "yes: shortcut A/B/C, CIFAR and ImageNet layouts, SE blocks"),
    ("preact_resnet, wrn", "yes"),
    ("resnext, se_resnext", "yes (grouped convolutions)"),
    ("lenet, alexnet, vgg", "yes; implicit FC flatten made explicit, adaptive pooling to a size "
                            "dividing its input rewritten as Pooling"),
    ("googlenet, inception_bn", "yes"),
    ("inception_v3/v4, _resnet_v2", "yes"),
    ("densenet", "yes"),
    ("mobilenet, mobilenet_v2", "yes (depthwise convolutions, relu6 as Clip)"),
    ("memonger=True", "yes (mirror attributes do not change the graph)"),
    ("deep supervision", "output 0 only (the main classifier); auxiliary heads are dropped"),
    ("cannot export", "adaptive pooling to a size that does not divide its input (exporter: "
                      "output_size != 1 not implemented); operators without an mx2onnx "
                      "converter (e.g. sort, custom ops): the error names the operator"),
)
EPILOG = "Families and options (mxnet 1.9.1 exporter, ONNX Runtime 1.18.1):\n" + "\n".join(
    "  %-30s %s" % row for row in SUPPORT)


class ExportError(common.UserError):
    """The exporter or the verification failed (message says where)."""


def _require_onnx():
    try:
        import onnx  # noqa: F401
        from onnx import mapping  # noqa: F401  (mxnet 1.9.1's exporter needs it)
    except ImportError as err:
        raise ExportError("ONNX export needs onnx<1.16 (mxnet 1.9.1 uses onnx.mapping): "
                          "pip install onnx==1.15.0 onnxruntime==1.18.1 (%s)" % err)


def _truthy(value, default):
    return default if value is None else is_true(value)


def exportable_symbol(sym, params, data_name, data_shape):
    """Rewrite what mxnet 1.9.1's exporter gets wrong or refuses, without changing results.

    * ``FullyConnected`` with no explicit ``flatten`` (MXNet's default is True): the exporter
      reads the missing flag as False and feeds 4-D data to Gemm -> ``flatten=True`` is written.
    * ``BatchNorm`` with ``fix_gamma`` (MXNet's default True): MXNet uses gamma = 1, the
      exporter the stored gamma -> ones are exported for that gamma.
    * ``_contrib_AdaptiveAvgPooling2D`` to an output size that divides its input size (VGG and
      AlexNet's ImageNet heads at 224 px): the same as average ``Pooling`` with kernel =
      stride = input / output, which the exporter knows (it only converts output size 1).
    Returns ``(symbol, params, notes)``.
    """
    import json

    import mxnet as mx
    graph = symbol_graph(sym)
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(**{data_name: tuple(data_shape)})
    shape_of = dict(zip(internals.list_outputs(), out_shapes))
    params, notes = dict(params), []
    for node in graph["nodes"]:
        attrs = node.setdefault("attrs", {})
        if node["op"] == "FullyConnected" and "flatten" not in attrs:
            attrs["flatten"] = "True"
        elif node["op"] == "BatchNorm" and _truthy(attrs.get("fix_gamma"), True):
            gamma = graph["nodes"][node["inputs"][1][0]]["name"]
            if gamma in params:
                params[gamma] = mx.nd.ones_like(params[gamma])
                notes.append("%s: fix_gamma -> gamma exported as ones" % node["name"])
        elif node["op"] == "_contrib_AdaptiveAvgPooling2D":
            source = graph["nodes"][node["inputs"][0][0]]
            in_shape = shape_of.get(source["name"] if source["op"] == "null"
                                    else source["name"] + "_output")
            size = [int(v) for v in re.findall(r"\d+", attrs.get("output_size", "1"))] or [1]
            size = size * 2 if len(size) == 1 else size
            if (in_shape and size != [1, 1] and in_shape[2] % size[0] == 0
                    and in_shape[3] % size[1] == 0):
                kernel = (in_shape[2] // size[0], in_shape[3] // size[1])
                node["op"] = "Pooling"
                node["attrs"] = {"kernel": str(kernel), "stride": str(kernel), "pool_type": "avg"}
                notes.append("%s: adaptive average pooling %s -> %s as Pooling kernel %s"
                             % (node["name"], tuple(in_shape[2:]), tuple(size), kernel))
    return mx.sym.load_json(json.dumps(graph)), params, notes


def export_checkpoint(prefix, epoch, output, image_shape=(3, 32, 32), batch_size=1,
                      dynamic_batch=False, verify=True,
                      tolerance=DEFAULT_TOLERANCE, seed=0):
    """Export ``prefix``/``epoch`` to ``output``; returns ``{'path', 'max_abs_diff', ...}``.

    Raises ``PredictError`` for unusable checkpoints and ``ExportError`` when MXNet's
    exporter cannot convert the graph or ONNX Runtime disagrees beyond ``tolerance``.
    """
    import mxnet as mx
    _require_onnx()
    sym, arg_params, aux_params = read_checkpoint(prefix, epoch)
    sym = inference_symbol(sym)
    data_shape = (int(batch_size),) + tuple(int(v) for v in image_shape)
    name = check_params(sym, arg_params, aux_params, data_shape,
                        source="%s-%04d.params" % (prefix, int(epoch)))
    check_batch(sym, name, data_shape, memory=verify)  # verification binds the batch in MXNet
    _check_output(output)
    needed = set(sym.list_arguments()) | set(sym.list_auxiliary_states())
    params = {k: v for k, v in list(arg_params.items()) + list(aux_params.items()) if k in needed}
    export_sym, params, notes = exportable_symbol(sym, params, name, data_shape)
    result = {}

    def write(tmp):
        try:
            mx.onnx.export_model(
                export_sym, params, in_shapes=[data_shape], in_types=[np.float32], onnx_file_path=tmp,
                dynamic=bool(dynamic_batch),
                dynamic_input_shapes=[(None,) + data_shape[1:]] if dynamic_batch else None)
        except Exception as err:  # the exporter raises AttributeError/KeyError/... per operator
            raise ExportError("MXNet's ONNX exporter cannot convert this network: %s: %s"
                              % (type(err).__name__, str(err).splitlines()[0] if str(err) else ""))
        opset = _keep_data_input(tmp)
        result.update(path=output, input=name, input_shape=data_shape, opset=opset, rewrites=notes)
        if verify:
            result.update(verify_onnx(tmp, sym, arg_params, aux_params, name, data_shape,
                                      tolerance, seed))
    try:
        common.atomic_write(output, write, make_dirs=False)
    except OSError as err:  # read-only folder, full disk, ...
        raise ExportError("cannot write %s (%s); choose another --output"
                          % (output, err.strerror or err))
    return result


def _check_output(output):
    """``PredictError`` unless ``output`` can be a file: its folder exists and it is no folder."""
    if os.path.isdir(output):
        raise PredictError("--output %s is a folder; give a file name, e.g. %s"
                           % (output, os.path.join(output, "model.onnx")))
    folder = os.path.dirname(os.path.abspath(output))
    parent = folder
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PredictError("cannot write %s: %s is a file, not a folder" % (output, parent))
    if parent != folder:
        raise PredictError("cannot write %s: folder %s does not exist" % (output, folder))


def _keep_data_input(path):
    """Drop the weights from the graph inputs of the ONNX file at ``path``; return its opset.

    MXNet's exporter lists every weight as a graph input too; with only the data input left,
    runtimes treat weights as constants (ONNX Runtime warns once per weight otherwise).
    """
    import onnx
    model = onnx.load(path)
    weights = {t.name for t in model.graph.initializer}
    data_inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(data_inputs)
    try:
        onnx.save(model, path)
    except ValueError as err:  # protobuf's 2 GB limit
        raise ExportError("onnx cannot save the model: %s" % str(err).splitlines()[0])
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _runtime_errors(onnx, ort):
    """The exceptions onnx.checker and ONNX Runtime raise for a model they reject."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NotImplemented",
             "RuntimeException", "EPFail")
    return (onnx.checker.ValidationError,) + tuple(getattr(state, n) for n in names if hasattr(state, n))


def verify_onnx(path, sym, arg_params, aux_params, name, data_shape, tolerance=DEFAULT_TOLERANCE,
                seed=0):
    """Run the ONNX file and the MXNet symbol on the same random input; raise if they differ."""
    import mxnet as mx
    import onnx
    import onnxruntime as ort
    x = np.random.RandomState(seed).uniform(-1, 1, data_shape).astype(np.float32)
    module = bind_inference(sym, name, data_shape, arg_params, aux_params)
    module.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    expected = module.get_outputs()[0].asnumpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    options.log_severity_level = 3  # errors only
    try:
        onnx.checker.check_model(onnx.load(path))
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    except _runtime_errors(onnx, ort) as err:  # an export that the checker/runtime reject
        raise ExportError("the exported model does not run in ONNX Runtime (%s: %s); the file was "
                          "not written" % (type(err).__name__, (str(err).splitlines() or [""])[0][:200]))
    if got.shape != expected.shape:
        raise ExportError("ONNX Runtime output has shape %s, MXNet's %s" % (got.shape, expected.shape))
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not diff <= tolerance:
        raise ExportError("ONNX Runtime and MXNet outputs differ by %.3g (> tolerance %.1g); the "
                          "file was not written" % (diff, tolerance))
    return {"max_abs_diff": diff, "output_shape": tuple(got.shape)}


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export prefix-symbol.json + prefix-NNNN.params to ONNX (mx.onnx.export_model) "
                    "and verify it with ONNX Runtime.",
        epilog=EPILOG)
    parser.add_argument("--model-prefix", required=True, help="checkpoint prefix (PREFIX-symbol.json)")
    parser.add_argument("--load-epoch", type=int, required=True,
                        help="N of PREFIX-NNNN.params (epochs completed)")
    parser.add_argument("--image-shape", help="C,H,W (default: the checkpoint's, else 3,32,32)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch of the exported graph")
    parser.add_argument("--dynamic-batch", action="store_true", help="make the batch axis dynamic")
    parser.add_argument("--output", help="ONNX file (default PREFIX-NNNN.onnx)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime comparison")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mxcnn import symbols
    try:
        image_shape = symbols.layers.as_image_shape(
            args.image_shape or (checkpoint_preprocess(args.model_prefix, args.load_epoch) or {})
            .get("image_shape") or (3, 32, 32))
        if args.batch_size < 1:
            raise PredictError("--batch-size must be at least 1, got %d" % args.batch_size)
        output = args.output or "%s-%04d.onnx" % (args.model_prefix, args.load_epoch)
        result = export_checkpoint(args.model_prefix, args.load_epoch, output, image_shape,
                                   args.batch_size, args.dynamic_batch, not args.no_verify,
                                   args.tolerance)
    except common.UserError as err:  # bad input; anything else is a bug and keeps its traceback
        return common.cli_error(PROG, err)
    line = "wrote %s (input %s %s, opset %d)" % (result["path"], result["input"],
                                                 "x".join(map(str, result["input_shape"])), result["opset"])
    if "max_abs_diff" in result:
        line += "; ONNX Runtime matches MXNet: max |diff| %.2g" % result["max_abs_diff"]
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
