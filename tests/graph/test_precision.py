"""graph.precision: mixed-precision training graphs keep a float32 interface and learn.

Structure tests run on every machine (AMP's conversion and type inference are graph work);
the bfloat16 numeric tests need a CPU with avx512_bf16 and MXNet's oneDNN and skip without.
"""
import json

import mxnet as mx
import numpy as np
import pytest

from mxcnn import common, symbols
from mxcnn.graph import fusion, precision
from mxcnn.train import engines
from tests.graph.graph_helpers import nodes

BATCH = 8
SHAPE = (BATCH, 3, 32, 32)
LOW = ("bfloat16", "float16")
HAS_BF16 = "avx512_bf16" in precision.cpu_flags() and fusion.available()
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="needs a CPU with avx512_bf16 and oneDNN "
                                                     "(flags seen: %s)" % ", ".join(
                                                         f for f in precision.ISA_FLAGS
                                                         if f in precision.cpu_flags()))

NETS = {
    "resnet8": ("resnet", dict(num_layers=8)),
    "preact20": ("preact_resnet", dict(num_layers=20)),
    "densenet40": ("densenet", dict(num_layers=40, growth_rate=12, bottleneck=True)),
    "inception_dsn": ("inception_bn", dict(deep_supervision="inception3c_output:0.2")),
    "googlenet": ("googlenet", {}),  # its first Concat needs graph.precision's repair
}


def _net(name):
    network, options = NETS[name]
    return symbols.get_symbol(network, num_classes=10, **options)


def _internal_types(sym):
    internals = sym.get_internals()
    _, types, _ = internals.infer_type(data="float32",
                                       **{n: "float32" for n in engines.label_names(sym)})
    return dict(zip(internals.list_outputs(), types))


def test_float32_is_the_identity():
    sym = _net("resnet8")
    assert precision.training_symbol(sym, "float32") is sym
    assert precision.optimizer_params("float32") == {}
    assert precision.optimizer_params("bfloat16") == {}
    assert precision.optimizer_params("float16") == {"multi_precision": True}
    with pytest.raises(common.UserError, match="choose one of float32, float16, bfloat16"):
        precision.training_symbol(sym, "int8")


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", sorted(NETS))
def test_interface_stays_float32(name, dtype):
    sym = _net(name)
    low = precision.training_symbol(sym, dtype)
    assert low.list_arguments() == sym.list_arguments()
    assert low.list_auxiliary_states() == sym.list_auxiliary_states()
    assert low.list_outputs() == sym.list_outputs()
    labels = {n: "float32" for n in engines.label_names(sym)}
    arg_types, out_types, aux_types = low.infer_type(data="float32", **labels)
    assert set(arg_types) == set(out_types) == set(aux_types) == {np.float32}
    # every convolution but the stem and the logit layers really runs in low precision ...
    kept = precision.float32_layers(sym)
    assert len(kept) == 1 + len(sym.list_outputs())  # one stem here, one layer per head
    convs = sum(node["op"] == "Convolution" and node["name"] not in kept for node in nodes(sym))
    assert precision.low_precision_ops(low, dtype).get("Convolution") == convs
    # ... the stem reads float32 data and writes float32 (oneDNN has no blocked bf16 kernel
    # for 3 input channels) and every loss head's logits are float32
    types = _internal_types(low)
    assert types[kept[0] + "_output"] == np.float32
    for head in sym.list_outputs():
        classifier = [c for c in sym[head].get_children().list_outputs() if c.endswith("_output")]
        assert types[classifier[0]] == np.float32, classifier
    # a saved converted graph is its float32 original (tojson drops amp_cast by default),
    # its Variables marked float32
    assert _without_dtype(json.loads(low.tojson())) == json.loads(sym.tojson())


def _without_dtype(graph):
    for node in graph["nodes"]:
        if node["op"] == "null" and node.get("attrs", {}).pop("__dtype__", "0") != "0":
            raise AssertionError("%s is not marked float32" % node["name"])
        if node.get("attrs") == {}:
            del node["attrs"]
    return graph


@pytest.mark.parametrize("dtype", LOW)
def test_batchnorm_keeps_float32_parameters_and_statistics(dtype):
    sym, _ = fusion.fuse_bn_relu(_net("preact20"), data=SHAPE)
    low = precision.training_symbol(sym, dtype)
    low_nodes = nodes(low)
    by_name = {node["name"]: node for node in low_nodes}
    bn_ops = ("BatchNorm", fusion.FUSED_OP)
    bn_params = set()
    for node in low_nodes:
        if node["op"] in bn_ops:
            bn_params.update(low_nodes[i[0]]["name"] for i in node["inputs"][1:])
            assert all(low_nodes[i[0]]["op"] == "null" for i in node["inputs"][1:]), node["name"]
    assert len(bn_params) == 4 * sum(node["op"] in bn_ops for node in low_nodes)
    cast_inputs = {low_nodes[i[0]]["name"] for node in low_nodes if node["op"] in precision.CAST_OPS
                   for i in node["inputs"]}
    assert not bn_params & cast_inputs
    assert all(by_name[name]["op"] == "null" for name in bn_params)
    arg_types, _, aux_types = low.infer_type(data="float32", softmax_label="float32")
    types = dict(zip(low.list_arguments() + low.list_auxiliary_states(), arg_types + aux_types))
    assert {types[name] for name in bn_params} == {np.float32}


def test_conversion_happens_once_and_after_fusion():
    sym = _net("resnet8")
    low = precision.training_symbol(sym, "bfloat16")
    assert precision.cast_count(low) > 0
    with pytest.raises(ValueError, match="already carries AMP casts"):
        precision.training_symbol(low, "bfloat16")
    # why it must be the last pass: a JSON round trip (fusion, memonger) drops every cast
    assert precision.cast_count(mx.sym.load_json(low.tojson())) == 0


def test_float16_graph_binds_on_cpu_with_float32_parameters():
    """CPU MXNet cannot run float16 convolutions; binding and inference still work."""
    sym = _net("resnet8")
    low = precision.training_symbol(sym, "float16")
    exe = low.simple_bind(mx.cpu(), data=SHAPE, softmax_label=(BATCH,))
    assert {exe.arg_dict[n].dtype for n in sym.list_arguments()} == {np.float32}
    assert {exe.grad_dict[n].dtype for n in sym.list_arguments()} == {np.float32}
    assert {a.dtype for a in exe.aux_arrays} == {np.float32}
    assert exe.outputs[0].dtype == np.float32 and exe.outputs[0].shape == (BATCH, 10)


def _cpu_message(dtype, flags, onednn=True, contexts=("cpu",)):
    with pytest.raises(common.UserError) as info:
        precision.check_supported(dtype, list(contexts), flags=flags, onednn=onednn)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_check_supported_names_the_problem_in_one_line():
    zen3 = {"fpu", "sse2", "avx", "avx2", "fma"}
    spr = zen3 | {"avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"}
    message = _cpu_message("bfloat16", zen3)
    assert "avx512_bf16" in message and "this CPU has avx2" in message and "float32" in message
    assert "this CPU has avx2, avx512f, avx512bw;" in _cpu_message(
        "bfloat16", zen3 | {"avx512f", "avx512bw"})
    assert "MXNET_MKLDNN_ENABLED" in _cpu_message("bfloat16", spr, onednn=False)
    assert "--gpus" in _cpu_message("float16", spr)
    assert "--gpus" in _cpu_message("float16", spr, contexts=[mx.gpu(0), mx.cpu()])
    assert "float16" in _cpu_message("bfloat16", spr, contexts=[mx.gpu(0)])
    assert "choose one of" in _cpu_message("half", spr)
    precision.check_supported("bfloat16", [mx.cpu(0), mx.cpu(1)], flags=spr, onednn=True)
    precision.check_supported("float16", [mx.gpu(0), mx.gpu(1)], flags=set())
    precision.check_supported("float32", [mx.cpu(), mx.gpu(0)], flags=set())


def test_auto_dtype_is_bfloat16_only_where_it_trains_faster():
    zen3 = {"fpu", "sse2", "avx", "avx2", "fma"}
    bf16 = zen3 | {"avx512f", "avx512bw", "avx512_bf16"}
    cpus = [mx.cpu(0), mx.cpu(1)]

    def auto(flags, vendor, contexts=cpus, onednn=True):
        return precision.resolve_dtype("auto", contexts, flags=flags, vendor=vendor, onednn=onednn)
    assert auto(bf16, "AuthenticAMD")[0] == "bfloat16"  # Zen 4, Zen 5
    dtype, why = auto(bf16 | {"amx_bf16", "amx_tile"}, "GenuineIntel")
    assert dtype == "float32" and "GenuineIntel" in why and "slower" in why
    assert auto(zen3, "AuthenticAMD") == ("float32", "this CPU has no avx512_bf16")
    assert auto(bf16, "AuthenticAMD", onednn=False)[0] == "float32"
    assert auto(bf16, "AuthenticAMD", contexts=[mx.gpu(0)])[0] == "float32"
    for explicit in ("float32", "bfloat16", "float16"):
        assert precision.resolve_dtype(explicit, cpus, flags=zen3, vendor="") == (explicit, None)


def test_cpu_flags_reads_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


# ---------------------------------------------------------------------------------------------
# bfloat16 numerics (CPUs with avx512_bf16)

def _forward_backward(sym, arg_params, aux_params, data, label):
    exe = sym.simple_bind(mx.cpu(), data=data.shape, softmax_label=label.shape)
    for name, value in list(arg_params.items()) + list(aux_params.items()):
        value.copyto(exe.arg_dict[name] if name in exe.arg_dict else exe.aux_dict[name])
    exe.arg_dict["data"][:] = data
    exe.arg_dict["softmax_label"][:] = label
    exe.forward(is_train=True)
    exe.backward()
    grads = {name: exe.grad_dict[name].asnumpy() for name in arg_params}
    return exe.outputs[0].asnumpy(), grads, {n: exe.aux_dict[n].asnumpy() for n in aux_params}


def _cosine(a, b):
    a = np.concatenate([a[k].ravel() for k in sorted(a)])
    b = np.concatenate([b[k].ravel() for k in sorted(b)])
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("network,shape,pinned", [
    ("googlenet", (3, 32, 32), ["inception3a_pool"]),
    ("inception_resnet_v2", (3, 224, 224), ["mixed6a_pool", "mixed7a_pool"]),
])
def test_mixed_concats_are_repaired(network, shape, pinned):
    """AMP's bfloat16 pass leaves these Concats with float32 and bfloat16 inputs (MXNet 1.9.1:
    "Non-uniform data type in Concat"); the repair pins the Pooling on the float32 side."""
    dtype = "bfloat16"
    sym = symbols.get_symbol(network, num_classes=10, image_shape=shape)
    from mxnet.contrib import amp
    with pytest.raises(mx.base.MXNetError, match="Non-uniform data type in Concat"):
        amp.convert_symbol(sym, target_dtype=dtype, data_names=["data", "softmax_label"],
                           excluded_sym_names=precision.float32_layers(sym))
    low = precision.training_symbol(sym, dtype)
    types = _internal_types(low)
    for name in pinned:
        assert types[name + "_output"] == np.float32
    kept = precision.float32_layers(sym)
    convs = sum(node["op"] == "Convolution" and node["name"] not in kept for node in nodes(sym))
    assert precision.low_precision_ops(low, dtype).get("Convolution") == convs


def test_clean_graphs_convert_as_amp_does():
    """No repair, so no extra casts, where AMP's own pass succeeds (DenseNet's many Concats)."""
    sym = _net("densenet40")
    from mxnet.contrib import amp
    plain = amp.convert_symbol(sym, target_dtype="bfloat16", data_names=["data", "softmax_label"],
                               excluded_sym_names=precision.float32_layers(sym))
    assert (precision.training_symbol(sym, "bfloat16").tojson(remove_amp_cast=False)
            == plain.tojson(remove_amp_cast=False))


@needs_bf16
@pytest.mark.parametrize("name,min_cosine", [("resnet8", 0.95), ("preact20", 0.95),
                                             ("googlenet", 0.7)])
def test_bfloat16_step_is_close_to_float32(name, min_cosine):
    """One bfloat16 step against float32 from the same weights, data and dropout mask.

    GoogLeNet's bound is lower: without residual paths its weight gradients grow 10-20x from
    the last inception block to the first at initialisation, and bf16's rounding grows with
    them (measured on a Sapphire Rapids Xeon: cosine 0.96-0.999 in inception5b, 0.64-0.80 in
    inception3a, the same with and without fusion and at batch 8 or 32).  A miswired branch
    gives a cosine near 0.
    """
    sym = _net(name)
    fused, _ = fusion.fuse_bn_relu(sym, data=SHAPE)
    mx.random.seed(3)
    arg_params, aux_params = engines.initial_params(sym, SHAPE)
    rs = np.random.RandomState(3)
    data = mx.nd.array(rs.uniform(-1, 1, SHAPE))
    label = mx.nd.array(rs.randint(0, 10, BATCH))
    mx.random.seed(4)  # GoogLeNet's dropout: the same mask in both runs
    out32, grads32, aux32 = _forward_backward(sym, arg_params, aux_params, data, label)
    mx.random.seed(4)
    out16, grads16, aux16 = _forward_backward(precision.training_symbol(fused, "bfloat16"),
                                              arg_params, aux_params, data, label)
    assert not np.array_equal(out16, out32)  # bfloat16 really ran
    np.testing.assert_allclose(out16, out32, atol=0.03)  # probabilities; bf16 has 8 bits
    assert _cosine(grads16, grads32) > min_cosine
    for key in aux32:  # moving statistics after one step (float32, from bf16 activations)
        np.testing.assert_allclose(aux16[key], aux32[key], rtol=0.02, atol=0.02)


#: (network, options) of every family graph.fusion fuses (tests/graph/test_fusion.py CASES).
FUSED_FAMILIES = [
    ("resnet", dict(num_layers=8)),
    ("preact_resnet", dict(num_layers=20)),
    ("wrn", dict(num_layers=10, widen_factor=2)),
    ("resnext", dict(num_layers=11, cardinality=2, bottleneck_width=16)),
    ("mobilenet", dict(multiplier=0.5)),
]


@needs_bf16
@pytest.mark.parametrize("network,options", FUSED_FAMILIES, ids=[f[0] for f in FUSED_FAMILIES])
def test_fusion_then_bfloat16_is_exact(network, options):
    """The trainer fuses BN+ReLU, then converts: the gradients must be the unfused graph's.

    Regression: with a bfloat16 stem (3 input channels) oneDNN wrote its output in the plain
    layout, and the fused BatchNorm after it back-propagated wrong gradients (relative error
    ~1) in PreAct and WRN; the stem stays float32 for that reason.
    """
    shape = (4, 3, 32, 32)
    sym = symbols.get_symbol(network, num_classes=10, **options)
    fused, pairs = fusion.fuse_bn_relu(sym, data=shape)
    assert pairs > 0
    mx.random.seed(5)
    arg_params, aux_params = engines.initial_params(sym, shape)
    data = mx.nd.random.uniform(-1, 1, shape)
    label = mx.nd.array(np.arange(4) % 10)
    out, grads, aux = _forward_backward(precision.training_symbol(sym, "bfloat16"),
                                        arg_params, aux_params, data, label)
    outf, gradsf, auxf = _forward_backward(precision.training_symbol(fused, "bfloat16"),
                                           arg_params, aux_params, data, label)
    np.testing.assert_allclose(outf, out, rtol=1e-5, atol=1e-6)
    for name in grads:
        scale = np.abs(grads[name]).max() + 1e-12
        assert np.abs(gradsf[name] - grads[name]).max() <= 1e-4 * scale, name
    for name in aux:
        np.testing.assert_allclose(auxf[name], aux[name], rtol=1e-5, atol=1e-6)


@needs_bf16
@pytest.mark.parametrize("engine", engines.ENGINES)
def test_bfloat16_training_lowers_the_loss_with_float32_weights(engine):
    sym = _net("resnet8")
    low = precision.training_symbol(fusion.fuse_bn_relu(sym, data=SHAPE)[0], "bfloat16")
    mx.random.seed(0)
    arg_params, aux_params = engines.initial_params(sym, SHAPE)
    rs = np.random.RandomState(0)
    data = mx.nd.array(rs.uniform(-1, 1, SHAPE))
    label = mx.nd.array(np.arange(BATCH) % 10)
    params = dict({"learning_rate": 0.05, "momentum": 0.9, "wd": 1e-4},
                  **precision.optimizer_params("bfloat16"))
    runner = engines.make_engine(engine, low, [mx.cpu()], SHAPE, (BATCH,), arg_params,
                                 aux_params, "sgd", params)
    losses = []
    for _ in range(8):
        runner.step(data, label)
        probs = runner.output().asnumpy()
        losses.append(-np.log(probs[np.arange(BATCH), np.arange(BATCH) % 10] + 1e-12).mean())
    assert losses[-1] < 0.5 * losses[0], losses
    arg, aux = runner.get_params()
    assert sorted(arg) == sorted(arg_params) and sorted(aux) == sorted(aux_params)
    assert {v.dtype for v in list(arg.values()) + list(aux.values())} == {np.float32}
