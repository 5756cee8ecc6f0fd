"""Small networks of every registered family with non-trivial weights and BatchNorm statistics,
for comparing inference graphs (fused, int8) against the plain float32 one.

Random weights alone make deep networks chaotic: with BatchNorm statistics taken from the
data, a 0.4% input change moved ResNet-50's and MobileNet's logits by 30%, so any int8 graph
"disagreed" with float32.  Trained networks are not like that on their data.  Here each
BatchNorm's moving mean is the batch mean of its input and its moving variance the batch
variance plus half its mean over channels (:func:`set_bn_statistics`): the logits then move
about as much as the input does, and a wrong layer stands out.
"""

import json

import numpy as np

#: (network, options, image shape): every registered family at its smallest size, CIFAR and
#: ImageNet layouts.  tests/inference/test_int8.py checks this covers ``list_networks()``.
CIFAR_CASES = [
    ("resnet", {"num_layers": 20}, (3, 32, 32)),
    ("se_resnet", {"num_layers": 20}, (3, 32, 32)),
    ("preact_resnet", {"num_layers": 20}, (3, 32, 32)),
    ("preact_resnet", {"num_layers": 20, "shortcut_type": "A"}, (3, 32, 32)),
    ("wrn", {"num_layers": 10, "widen_factor": 2}, (3, 32, 32)),
    ("resnext", {"num_layers": 29, "cardinality": 4, "bottleneck_width": 4}, (3, 32, 32)),
    ("se_resnext", {"num_layers": 29, "cardinality": 2, "bottleneck_width": 4}, (3, 32, 32)),
    ("lenet", {}, (3, 32, 32)),
    ("alexnet", {}, (3, 32, 32)),
    ("vgg", {"num_layers": 11, "batch_norm": True}, (3, 32, 32)),
    ("googlenet", {}, (3, 32, 32)),
    ("inception_bn", {}, (3, 32, 32)),
    ("densenet", {"num_layers": 16, "growth_rate": 8}, (3, 32, 32)),
    ("mobilenet", {"multiplier": 0.25}, (3, 32, 32)),
    ("mobilenet_v2", {"multiplier": 0.35}, (3, 32, 32)),
    ("airbench", {"widths": (16, 32, 32)}, (3, 32, 32)),
]
IMAGENET_CASES = [
    ("resnet", {"num_layers": 18, "style": "imagenet"}, (3, 64, 64)),
    ("resnet", {"num_layers": 50, "style": "imagenet"}, (3, 64, 64)),
    ("preact_resnet", {"num_layers": 18, "style": "imagenet"}, (3, 64, 64)),
    ("resnext", {"num_layers": 50, "style": "imagenet"}, (3, 64, 64)),
    ("densenet", {"num_layers": 121, "style": "imagenet"}, (3, 64, 64)),
    ("mobilenet_v2", {"multiplier": 0.35, "style": "imagenet"}, (3, 64, 64)),
    ("googlenet", {"style": "imagenet"}, (3, 64, 64)),
    ("inception_bn", {"style": "imagenet"}, (3, 64, 64)),
    ("alexnet", {"style": "imagenet"}, (3, 64, 64)),
    ("inception_v3", {}, (3, 75, 75)),
    ("inception_v4", {}, (3, 75, 75)),
    ("inception_resnet_v2", {}, (3, 75, 75)),
]


def case_id(case):
    network, options, shape = case
    extra = ",".join("%s=%s" % (k, v) for k, v in sorted(options.items()) if k != "style")
    return "%s[%s]@%d%s" % (network, extra, shape[1], "-imagenet" if options.get("style") else "")


def smooth_images(count, shape, seed):
    """(count, C, H, W) float32 images: blocky low-frequency noise plus fine noise."""
    rs = np.random.RandomState(seed)
    channels, height, width = shape
    coarse = rs.randn(count, channels, max(2, height // 8), max(2, width // 8)).astype(np.float32)
    big = np.repeat(
        np.repeat(coarse, -(-height // coarse.shape[2]), axis=2), -(-width // coarse.shape[3]), axis=3
    )[:, :, :height, :width]
    return big + 0.3 * rs.randn(count, channels, height, width).astype(np.float32)


def random_params(sym, shape, seed=0):
    """``(arg_params, aux_params)``: He-normal weights, gamma in [0.5, 1.5], beta and biases
    N(0, 0.2), BatchNorm statistics 0/1 (see :func:`set_bn_statistics`)."""
    import mxnet as mx

    arg_shapes, _, aux_shapes = sym.infer_shape(data=(1,) + tuple(shape))
    rs = np.random.RandomState(seed)
    args = {}
    for name, s in zip(sym.list_arguments(), arg_shapes):
        if name == "data" or name.endswith("label"):
            continue
        if name.endswith("gamma"):
            value = rs.uniform(0.5, 1.5, s)
        elif name.endswith(("beta", "bias")):
            value = rs.normal(0, 0.2, s)
        else:
            value = rs.normal(0, np.sqrt(2.0 / max(1, int(np.prod(s[1:])))), s)
        args[name] = mx.nd.array(value.astype(np.float32))
    auxs = {
        name: mx.nd.array(np.zeros(s) if name.endswith("mean") else np.ones(s))
        for name, s in zip(sym.list_auxiliary_states(), aux_shapes)
    }
    return args, auxs


def _bn_inputs(sym):
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    outputs = set(sym.get_internals().list_outputs())
    found = []
    for node in nodes:
        if node["op"] != "BatchNorm":
            continue
        source, index = nodes[node["inputs"][0][0]], node["inputs"][0][1]
        name = source["name"] if source["op"] == "null" else "%s_output" % source["name"]
        if name not in outputs:
            name = "%s_output%d" % (source["name"], index)
        found.append((node["name"], name))
    return found


def set_bn_statistics(sym, args, auxs, batch):
    """Each BatchNorm's moving mean/variance from its input on ``batch`` (training-mode
    forward, so every BatchNorm sees what it will see in inference): mean, and variance +
    0.5 x its channel mean (module docstring).  Returns the new ``aux_params``."""
    import mxnet as mx

    pairs = _bn_inputs(sym)
    if not pairs:
        return dict(auxs)
    internals = sym.get_internals()
    group = mx.sym.Group([internals[name] for _, name in pairs])
    from mxcnn.common import runtime

    with runtime.temporary_env("MXNET_SUBGRAPH_BACKEND", "NONE"):  # the internals themselves
        executor = group.simple_bind(mx.cpu(), grad_req="null", data=batch.shape)
    for name, array in list(args.items()) + list(auxs.items()):
        target = executor.arg_dict.get(name, executor.aux_dict.get(name))
        if target is not None:
            target[:] = array
    executor.arg_dict["data"][:] = batch
    auxs = dict(auxs)
    for (bn, _), out in zip(pairs, executor.forward(is_train=True)):
        x = out.asnumpy()
        axes = (0, 2, 3) if x.ndim == 4 else (0,)
        var = x.var(axis=axes)
        auxs[bn + "_moving_mean"] = mx.nd.array(x.mean(axis=axes))
        auxs[bn + "_moving_var"] = mx.nd.array(var + 0.5 * var.mean())
    return auxs


def build_case(case, seed=0):
    """``(inference symbol, arg_params, aux_params)`` of a case, statistics set on 16 images."""
    from mxcnn import symbols
    from mxcnn.graph.inference import inference_symbol

    network, options, shape = case
    sym = symbols.get_symbol(network, num_classes=10, image_shape=shape, **options)
    args, auxs = random_params(sym, shape, seed)
    import mxnet as mx

    auxs = set_bn_statistics(sym, args, auxs, mx.nd.array(smooth_images(16, shape, seed + 1)))
    return inference_symbol(sym), args, auxs


def logits_of(sym):
    """The input of an inference symbol's final ``softmax`` (the logits), else ``sym``."""
    graph = json.loads(sym.tojson())
    return sym.get_children()[0] if graph["nodes"][graph["heads"][0][0]]["op"] == "softmax" else sym


def forward(module, images):
    """Output 0 of a bound module for an (N, C, H, W) array, as numpy."""
    import mxnet as mx

    module.forward(mx.io.DataBatch([mx.nd.array(images)]), is_train=False)
    return module.get_outputs()[0].asnumpy()
