"""inference/convert.py against PyTorch itself: random-weight torchvision / akamaster models ->
file -> import -> our logits equal the source's forward; export -> ``torch.load(weights_only=True)``
+ ``load_state_dict(strict=True)`` -> equal logits; ours -> PyTorch -> ours is bit-exact.

PyTorch runs in its own venv (``.venv-torch``, built by the Makefile from
requirements-bench.txt); without it these tests are skipped.  torch starts twice for the
whole module, as a worker that writes each source file and runs each forward.
"""
import glob
import json
import os
import subprocess

import numpy as np
import pytest

from mxcnn.inference import checkpoint, convert, weight_check
from mxcnn.inference.weight_graph import graph_difference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCH_PYTHON = os.path.join(ROOT, ".venv-torch", "bin", "python")
HAS_TORCHVISION = bool(glob.glob(os.path.join(ROOT, ".venv-torch", "lib", "python3*",
                                              "site-packages", "torchvision", "__init__.py")))
pytestmark = pytest.mark.skipif(not (os.path.isfile(TORCH_PYTHON) and HAS_TORCHVISION),
                                reason="no .venv-torch with torch and torchvision "
                                       "(make .venv-torch/.installed)")

#: (kind, arch, input side): small inputs keep the forwards fast; the layouts are ImageNet's.
CASES = [("torchvision", "resnet18", 64), ("torchvision", "resnet50", 64),
         ("torchvision", "resnext50_32x4d", 64), ("torchvision", "vgg16_bn", 32),
         ("torchvision", "densenet121", 64), ("torchvision", "mobilenet_v2", 64),
         ("torchvision", "googlenet", 64), ("torchvision", "inception_v3", 80),
         ("torchvision", "alexnet", 64), ("akamaster", "resnet20", 32)]
IDS = ["%s:%s" % (kind, arch) for kind, arch, _ in CASES]
BATCH = 16
CLASSES = 10


class TorchWorker:
    """One torch process for the whole module (``torch_reference.py --serve``): jobs in, ``ok`` out."""

    def __init__(self):
        self.process = subprocess.Popen([TORCH_PYTHON, weight_check.REFERENCE_SCRIPT, "--serve"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, jobs):
        self.process.stdin.write(json.dumps(jobs) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer == "ok", answer or "the torch worker died"

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """``results(kind, arch, side)``: that case converted and run, once (by the first test asking)."""
    work, worker = str(tmp_path_factory.mktemp("convert")), TorchWorker()
    cache = {}

    def get(kind, arch, side):
        if arch not in cache:
            cache[arch] = run_case(worker, work, kind, arch, side, seed=len(cache))
        return cache[arch]
    yield get
    worker.close()


def run_case(worker, work, kind, arch, side, seed):
    """Random source file; import, our logits, export, re-import; both PyTorch forwards."""
    spec = "%s:%s" % (kind, arch)
    # akamaster's released .th files are legacy-format checkpoints of a DataParallel model
    source = os.path.join(work, "%s.%s" % (arch, "th" if kind == "akamaster" else "pth"))
    worker.run({"action": "random", "kind": kind, "arch": arch, "num_classes": CLASSES,
                "output": source, "seed": seed, "legacy": kind == "akamaster",
                "wrap": kind == "akamaster"})
    prefix, again = os.path.join(work, arch, "m"), os.path.join(work, arch + "-again", "m")
    summary = convert.import_weights(spec, source, prefix, image_shape=(3, side, side))
    pixels = weight_check.random_pixels(BATCH, summary["image_shape"])
    family = convert.weight_maps.SOURCES[kind][arch].family
    inputs = {"source": weight_check.normalise(pixels, family.preprocess["mean"], family.preprocess["std"]),
              "export": weight_check.normalise(pixels, summary["preprocess"]["mean"],
                                               summary["preprocess"]["std"])}
    exported = convert.export_weights(prefix, spec, os.path.join(work, arch + "-export.pth"))
    convert.import_weights(spec, exported["path"], again, image_shape=(3, side, side))
    case = {"prefix": prefix, "again": again, "source_file": source,
            "ours_logits": weight_check.our_logits(prefix, 0, inputs["export"])}
    options = {"source": summary["options"], "export": {name: False for name in summary["options"]}}
    for role, weights in (("source", source), ("export", exported["path"])):
        x, y = (os.path.join(work, "%s-%s-%s.npy" % (arch, role, io)) for io in ("x", "y"))
        np.save(x, inputs[role])
        worker.run({"action": "forward", "kind": kind, "arch": arch, "num_classes": CLASSES,
                    "options": options[role], "weights": weights, "inputs": x, "output": y})
        case[role + "_logits"] = np.load(y)
    for path in (source, exported["path"]):  # the big ones (VGG: 540 MB) go as soon as they can
        if path != source or kind != "akamaster":
            os.remove(path)
    return case


@pytest.mark.parametrize("kind,arch,side", CASES, ids=IDS)
def test_import_gives_the_source_logits(results, kind, arch, side):
    case = results(kind, arch, side)
    result = weight_check.compare(case["ours_logits"], case["source_logits"], 1e-4)
    assert result["ok"], weight_check.describe_check(result)
    # tighter than the target: a BatchNorm epsilon of 2e-5 instead of 1e-5 gives ~5e-5
    assert result["count"] == BATCH and result["relative"] < 1e-5


@pytest.mark.parametrize("kind,arch,side", CASES, ids=IDS)
def test_export_loads_strictly_into_the_source_model(results, kind, arch, side):
    case = results(kind, arch, side)  # the forward job ran torch.load(weights_only=True) + strict loading
    result = weight_check.compare(case["ours_logits"], case["export_logits"], 1e-4)
    assert result["ok"], weight_check.describe_check(result)


@pytest.mark.parametrize("kind,arch,side", CASES, ids=IDS)
def test_round_trip_is_bit_exact(results, kind, arch, side):
    case = results(kind, arch, side)
    first, second = (checkpoint.load_params(case[key], 0) for key in ("prefix", "again"))
    for one, two in ((first[1], second[1]), (first[2], second[2])):
        assert sorted(one) == sorted(two)
        for name in one:
            assert np.array_equal(one[name].asnumpy(), two[name].asnumpy()), name
    assert graph_difference(first[0], second[0]) is None


def test_imported_checkpoint_records_the_source_preprocessing(results):
    state = checkpoint.load_state(results(*CASES[6])["prefix"], 0)
    assert state["preprocess"]["mean"] == [127.5] * 3 == state["preprocess"]["std"]  # transform_input
    assert state["imported_from"]["source"] == "torchvision:googlenet"
    assert state["imported_from"]["options"] == {"transform_input": True}
    aka = checkpoint.load_state(results(*CASES[-1])["prefix"], 0)["preprocess"]
    assert aka["classes"][:2] == ["airplane", "automobile"] and aka["image_shape"] == [3, 32, 32]


def test_cli_check_exits_nonzero_above_the_tolerance(results, capsys):
    case = results(*CASES[-1])
    source, prefix = case["source_file"], os.path.join(os.path.dirname(case["prefix"]) + "-cli", "m")
    code = convert.main(["--from", "akamaster:resnet20", source, "--model-prefix", prefix,
                         "--check", "--torch-python", TORCH_PYTHON, "--check-batch", "8",
                         "--tolerance", "1e-12"])
    out = capsys.readouterr().out
    assert "check: 8 images" in out and "top-1 agreement 8/8" in out
    assert code == (1 if "FAILED" in out else 0)
    relative = float(out.split("relative ")[1].split(" ")[0])
    assert (code == 1) == (relative > 1e-12)
    assert checkpoint.latest_epoch(prefix) == 0
