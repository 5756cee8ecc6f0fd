"""inference/convert.py without PyTorch: GluonCV model-zoo nets and an MXNet example-style
checkpoint against their own forwards, hostile input (one line, exit 2), atomic checkpoints."""
import os
import pickle
import zipfile
from collections import OrderedDict

import mxnet as mx
import numpy as np
import pytest

from mxcnn.inference import checkpoint, convert, torch_file, weight_check, weight_maps
from mxcnn.inference.weight_graph import build_symbol, param_shapes

gluoncv = pytest.importorskip("gluoncv")


class CheckArgs:
    check_batch, torch_python, tolerance = 8, None, 1e-4


def random_gluon(name, path, seed=0):
    """GluonCV's ``name`` with random weights and BatchNorm statistics, saved by save_parameters."""
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    net = gluoncv.model_zoo.get_model(name, classes=10)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    for key, param in net._collect_params_with_prefix().items():
        member = key.rpartition(".")[2]
        if member in ("running_var", "gamma"):
            param.set_data(mx.nd.array(rng.rand(*param.shape) + 0.5))
        elif member in ("running_mean", "beta"):
            param.set_data(mx.nd.array(rng.randn(*param.shape) * 0.1))
    net.save_parameters(path)
    return path


GLUON = [("cifar_resnet20_v1", True), ("cifar_resnet20_v2", False),
         ("cifar_wideresnet16_10", False), ("cifar_resnext29_32x4d", True),
         ("resnet18_v1b", True), ("resnet18_v1", True)]


@pytest.mark.parametrize("name,exact_round_trip", GLUON)
def test_gluoncv_import_export_and_round_trip(tmp_path, name, exact_round_trip):
    source = random_gluon(name, str(tmp_path / (name + ".params")))
    prefix, spec = str(tmp_path / "m"), "gluoncv:" + name
    summary = convert.import_weights(spec, source, prefix, image_shape=(3, 32, 32))
    result = weight_check.check_import(summary, source, prefix, CheckArgs)
    assert result["ok"], weight_check.describe_check(result)
    exported = convert.export_weights(prefix, spec, str(tmp_path / "out.params"))
    result = weight_check.check_export(exported, prefix, CheckArgs)
    assert result["ok"], weight_check.describe_check(result)
    if exact_round_trip:  # the data BatchNorm of v2 / WRN is folded, so only these are exact
        original, back = convert.read_params(source), convert.read_params(exported["path"])
        assert sorted(original) == sorted(back)
        assert all(np.array_equal(original[k], back[k]) for k in original)


def test_gluoncv_v1_bottlenecks_are_refused_with_the_reason(tmp_path):
    with pytest.raises(convert.ConvertError, match="strides the first 1x1 convolution.*v1b"):
        convert.import_weights("gluoncv:resnet50_v1", str(tmp_path / "x.params"), str(tmp_path / "m"))


# ----------------------------------------------------------------------------- MXNet examples
def example_unit(data, num_filter, stride, dim_match, name):
    """MXNet example/image-classification/symbols/resnet.py's bottleneck unit (pre-activation)."""
    def bn_relu(x, suffix):
        x = mx.sym.BatchNorm(x, fix_gamma=False, eps=2e-5, momentum=0.9, name=name + "_bn" + suffix)
        return mx.sym.Activation(x, act_type="relu", name=name + "_relu" + suffix)
    act1 = bn_relu(data, "1")
    conv1 = mx.sym.Convolution(act1, num_filter=num_filter // 4, kernel=(1, 1), no_bias=True,
                               name=name + "_conv1")
    conv2 = mx.sym.Convolution(bn_relu(conv1, "2"), num_filter=num_filter // 4, kernel=(3, 3),
                               stride=stride, pad=(1, 1), no_bias=True, name=name + "_conv2")
    conv3 = mx.sym.Convolution(bn_relu(conv2, "3"), num_filter=num_filter, kernel=(1, 1),
                               no_bias=True, name=name + "_conv3")
    shortcut = data if dim_match else mx.sym.Convolution(
        act1, num_filter=num_filter, kernel=(1, 1), stride=stride, no_bias=True, name=name + "_sc")
    return conv3 + shortcut


def example_resnet164(num_classes=10):
    """The example's CIFAR ResNet-164: ``bn_data``, conv0, 3 x 18 bottleneck units, bn1, fc1."""
    data = mx.sym.BatchNorm(mx.sym.identity(mx.sym.Variable("data"), name="id"), fix_gamma=True,
                            eps=2e-5, momentum=0.9, name="bn_data")
    body = mx.sym.Convolution(data, num_filter=16, kernel=(3, 3), pad=(1, 1), no_bias=True, name="conv0")
    for stage, width in enumerate((64, 128, 256)):
        for unit in range(18):
            stride = (2, 2) if stage and not unit else (1, 1)
            body = example_unit(body, width, stride, unit > 0, "stage%d_unit%d" % (stage + 1, unit + 1))
    body = mx.sym.BatchNorm(body, fix_gamma=False, eps=2e-5, momentum=0.9, name="bn1")
    body = mx.sym.Activation(body, act_type="relu", name="relu1")
    pool = mx.sym.Pooling(body, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    fc1 = mx.sym.FullyConnected(mx.sym.Flatten(pool), num_hidden=num_classes, name="fc1")
    return mx.sym.SoftmaxOutput(fc1, name="softmax")


def test_mxnet_example_checkpoint_maps_by_name(tmp_path):
    sym = example_resnet164()
    module = mx.mod.Module(sym)
    module.bind([("data", (1, 3, 32, 32))], [("softmax_label", (1,))], for_training=False)
    module.init_params(mx.init.Xavier())
    arg, aux = module.get_params()
    rng = np.random.RandomState(0)
    for name in list(arg) + list(aux):
        target = arg if name in arg else aux
        if name.endswith(("_gamma", "_moving_var")):
            target[name] = mx.nd.array(rng.rand(*target[name].shape) + 0.5)
        elif name.endswith(("_beta", "_moving_mean")):
            target[name] = mx.nd.array(rng.randn(*target[name].shape) * 0.1)
    source = str(tmp_path / "resnet-164")
    mx.model.save_checkpoint(source, 12, sym, arg, aux)
    summary = convert.import_weights("mxnet:resnet164_cifar", source + "-0012.params",
                                     str(tmp_path / "m"))
    result = weight_check.check_import(summary, source + "-0012.params", str(tmp_path / "m"), CheckArgs)
    assert result["ok"], weight_check.describe_check(result)
    assert summary["preprocess"]["std"] != [1.0, 1.0, 1.0]  # bn_data went into the preprocessing
    with pytest.raises(convert.ConvertError, match="projection shortcut.*stage1_unit1"):
        convert.import_weights("mxnet:resnet20_cifar", source + "-0012.params", str(tmp_path / "n"))


# ----------------------------------------------------------------------------- bad input
def resnet18_file(path, drop=None, num_classes=10):
    """A torchvision resnet18 state_dict made from our own tables (no torch needed)."""
    arch = weight_maps.SOURCES["torchvision"]["resnet18"]
    shapes = param_shapes(build_symbol(arch, num_classes, (3, 64, 64)), (3, 64, 64))
    rng = np.random.RandomState(0)
    ours = {n: (rng.rand(*s) + 0.5).astype(np.float32) for n, s in shapes.items()}
    tensors = convert.map_to_source(arch.family, ours, list(shapes), 3)
    tensors.pop(drop, None)
    torch_file.write_state_dict(path, tensors)
    return path


def run_cli(capsys, *argv):
    code = convert.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys, *argv):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("convert.py: error: "), err
    return err


def test_a_wrong_architecture_names_the_tensors_with_both_shapes(tmp_path, capsys):
    source = resnet18_file(str(tmp_path / "r18.pth"))
    err = one_line_error(capsys, "--from", "torchvision:resnet50", source, "--model-prefix",
                         str(tmp_path / "m"))
    assert "mis-shaped: layer1.0.conv1.weight 64x64x3x3 where stage1_unit1_a_conv_weight needs " \
           "64x64x1x1" in err
    assert "missing: stage1_unit1_c_conv_weight 256x64x1x1" in err
    assert not os.path.exists(str(tmp_path / "m-symbol.json"))
    source = resnet18_file(str(tmp_path / "short.pth"), drop="layer2.1.bn2.running_var")
    err = one_line_error(capsys, "--from", "torchvision:resnet18", source, "--model-prefix",
                         str(tmp_path / "m"), "--image-shape", "3,64,64")
    assert "1 missing: stage2_unit2_b_bn_moving_var 128" in err


def test_hostile_files_get_one_line_and_exit_2(tmp_path, capsys):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch %s" % marker,))
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(OrderedDict(w=Payload()), protocol=2))
    escape = tmp_path / "escape.pth"
    with zipfile.ZipFile(escape, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(OrderedDict(), protocol=2))
        archive.writestr("archive/../../outside", b"x")
    good = resnet18_file(str(tmp_path / "good.pth"))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(open(good, "rb").read()[:1000000])
    params = tmp_path / "cut.params"
    params.write_bytes(open(random_gluon("cifar_resnet20_v1",
                       str(tmp_path / "g.params")), "rb").read()[:5000])
    expected = {(evil, "torchvision:resnet18"): "posix.system",
                (escape, "torchvision:resnet18"): "points outside the archive",
                (cut, "torchvision:resnet18"): "truncated", (good, "gluoncv:cifar_resnet20_v1"):
                "not a complete MXNet/Gluon .params file", (params, "gluoncv:cifar_resnet20_v1"):
                "not a complete MXNet/Gluon .params file"}
    for (path, spec), words in expected.items():
        err = one_line_error(capsys, "--from", spec, str(path), "--model-prefix", str(tmp_path / "m"))
        assert words in err and str(path) in err
    assert not marker.exists()
    assert not os.path.exists(str(tmp_path / "m-symbol.json"))
    for argv, words in ((["--from", "keras:r50", good], "unknown source"),
                        (["--from", "torchvision:resnet18", str(tmp_path / "none.pth")], "cannot read"),
                        (["--from", "torchvision:resnet18", good, "--option", "x=1"], "does not apply"),
                        (["--from", "torchvision:resnet18", good, "--image-shape", "3,x,8"],
                         "--image-shape: image_shape"),
                        (["--from", "torchvision:inception_v3", good, "--image-shape", "3,32,32"],
                         "inputs of at least 75x75"),
                        (["--to", "torchvision:resnet18", str(tmp_path / "o.pth")],
                         "no complete checkpoint")):
        assert words in one_line_error(capsys, *argv, "--model-prefix", str(tmp_path / "m"))


def test_existing_checkpoints_are_replaced_whole_or_kept(tmp_path, capsys):
    source = resnet18_file(str(tmp_path / "r18.pth"))
    prefix = str(tmp_path / "run" / "m")
    code, out, err = run_cli(capsys, "--from", "torchvision:resnet18", source, "--model-prefix",
                             prefix, "--image-shape", "3,64,64")
    assert code == 0 and "imported torchvision:resnet18: 102 tensors, 10 classes" in out, err
    before = checkpoint.load_params(prefix, 0)[1]["fc1_weight"].asnumpy()
    err = one_line_error(capsys, "--from", "torchvision:resnet18", source, "--model-prefix", prefix)
    assert "already holds a checkpoint (epochs 0); pass --force" in err
    other = resnet18_file(str(tmp_path / "r18b.pth"), num_classes=7)
    one_line_error(capsys, "--from", "torchvision:resnet50", other, "--model-prefix", prefix, "--force")
    assert np.array_equal(checkpoint.load_params(prefix, 0)[1]["fc1_weight"].asnumpy(), before)
    code, _, _ = run_cli(capsys, "--from", "torchvision:resnet18", other, "--model-prefix", prefix,
                         "--force", "--image-shape", "3,64,64")
    assert code == 0 and checkpoint.load_params(prefix, 0)[1]["fc1_weight"].shape == (7, 512)
    assert checkpoint.damage(prefix, 0) is None


def test_a_kill_while_importing_leaves_the_old_checkpoint_or_the_new(tmp_path, killed_at):
    source = resnet18_file(str(tmp_path / "r18.pth"))
    other = resnet18_file(str(tmp_path / "r18b.pth"), num_classes=7)
    prefix = str(tmp_path / "m")
    convert.import_weights("torchvision:resnet18", source, prefix, image_shape=(3, 64, 64))
    for k in range(1, 60, 4):
        if not killed_at(k, lambda: convert.import_weights("torchvision:resnet18", other, prefix,
                                                           image_shape=(3, 64, 64), force=True)):
            break
        classes = checkpoint.load_params(prefix, 0)[1]["fc1_weight"].shape[0]
        assert classes in (7, 10) and checkpoint.damage(prefix, 0) is None, k


def test_an_imported_checkpoint_scores_exports_to_onnx_and_inspects_unchanged(tmp_path, capsys):
    import cv2

    from mxcnn.graph.inspector import cli as inspector
    from mxcnn.inference import export_onnx, score
    source = random_gluon("cifar_resnet20_v1", str(tmp_path / "r20.params"))  # an edited graph
    prefix = str(tmp_path / "m")
    assert convert.main(["--from", "gluoncv:cifar_resnet20_v1", source, "--model-prefix", prefix]) == 0
    image = str(tmp_path / "cat.png")
    cv2.imwrite(image, np.random.RandomState(0).randint(0, 255, (40, 48, 3)).astype(np.uint8))
    capsys.readouterr()
    assert score.main(["--model-prefix", prefix, "--load-epoch", "0", "--predict", image,
                       "--top-k", "2"]) == 0
    names = capsys.readouterr().out.split(": ", 1)[1].split()[::2]  # "cat.png: ship 0.4, dog 0.2"
    assert len(names) == 2 and all(n.rstrip(",") in weight_maps.CIFAR10_CLASSES for n in names)
    assert export_onnx.main(["--model-prefix", prefix, "--load-epoch", "0",
                             "--output", str(tmp_path / "m.onnx")]) == 0
    assert "ONNX Runtime matches MXNet" in capsys.readouterr().out
    assert inspector.main([prefix + "-symbol.json", "--image-shape", "3,32,32"]) == 0
    assert "Parameter memory" in capsys.readouterr().out
