"""The worker processes of bench/inference.py: one framework and thread count each, answering
JSON requests on stdin ("time" single forwards, "predict" a saved test array) with one
``RESULT {json}`` line each on stdout, so that the parent can interleave every variant."""

import importlib.util
import json
import os
import subprocess
import sys
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "inference.py")


def _mxcnn_importable():
    """Let ``mxcnn`` import from the checkout in an interpreter where it is not installed."""
    if importlib.util.find_spec("mxcnn") is None:
        package = types.ModuleType("mxcnn")
        package.__path__ = [ROOT]
        sys.modules["mxcnn"] = package


def _mx_model(spec, variant, batch):
    from mxcnn.inference.predict import (
        bind_inference,
        check_params,
        inference_symbol,
        numpy_forward,
        read_checkpoint,
    )

    prefix = spec["int8"] if variant == "int8" else spec["prefix"]
    sym, args, auxs = read_checkpoint(prefix, spec["epoch"])
    sym = inference_symbol(sym)
    shape = (batch,) + tuple(spec["shape"])
    name = check_params(sym, args, auxs, shape)
    module = bind_inference(
        sym,
        name,
        shape,
        args,
        auxs,
        fuse=variant != "fp32",
        dtype="bfloat16" if variant == "bf16" else "float32",
    )
    return numpy_forward(module)


def _ort_model(spec, variant, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(spec[variant], options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def _torchvision(name):
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("_meta"))
    import torchvision

    if name == "tv_resnet50":
        return torchvision.models.resnet50(weights=None, num_classes=10)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    model.features[0][0].stride = (1, 1)  # the CIFAR layout: stride-1 stem and first 24-channel stage
    model.features[2].conv[1][0].stride = (1, 1)
    return model


def _torch_model(spec, threads):
    import torch

    torch.set_num_threads(threads)
    if spec["torch"].startswith("tv_"):
        model = _torchvision(spec["torch"])
    else:
        sys.path.insert(0, HERE)
        import torch_models

        model = torch_models.build(spec["torch"])
    model = model.eval().to(memory_format=torch.channels_last)

    def run(images):
        with torch.inference_mode():
            x = torch.from_numpy(images).contiguous(memory_format=torch.channels_last)
            return model(x).numpy()

    return run


def _runner(kind, threads, cache, spec, variant, batch):
    key = (spec["net"], variant, batch)
    if key not in cache:
        if kind == "mx":
            cache[key] = _mx_model(spec, variant, batch)
        elif kind == "ort":
            cache[key] = _ort_model(spec, variant, threads)
        else:
            cache[key] = _torch_model(spec, threads)
    return cache[key]


#: Untimed forwards before each timed series (the profile counts them too).
WARMUP = 3


def _time(run, images, iters):
    for _ in range(WARMUP):
        run(images)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - start)
    return times


def _ort_profile(spec, variant, threads, batch, iters):
    """ONNX Runtime's own per-node profile: ``{op type: ms per forward}`` of its kernels, and
    ``"session"``: its whole ``run`` per forward."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(spec[variant]), "ort-profile")
    session = ort.InferenceSession(spec[variant], options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images = np.random.RandomState(0).rand(batch, *spec["shape"]).astype(np.float32)
    for _ in range(WARMUP + iters):
        session.run(None, {name: images})
    path = session.end_profiling()
    with open(path) as handle:
        events = json.load(handle)
    os.remove(path)
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    start = runs[WARMUP]  # the first runs carry one-off costs: count the timed ones only
    events = [e for e in events if e.get("ts", 0) >= start]
    totals = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1e3
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            totals["session"] = totals.get("session", 0.0) + event["dur"] / 1e3
    return {op: ms / iters for op, ms in totals.items()}


def _predict(run, path, batch):
    images = np.load(path)
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start: start + batch]
        padded = np.zeros((batch,) + images.shape[1:], np.float32)
        padded[: len(chunk)] = chunk
        out.append(np.asarray(run(padded))[: len(chunk)].argmax(1))
    return np.concatenate(out).tolist()


def worker(kind, threads):
    """Answer JSON requests on stdin (one per line) with one tagged JSON line each."""
    if kind == "torch":
        _mxcnn_importable()
    cache = {}
    for line in sys.stdin:
        request = json.loads(line)
        spec, variant, batch = request["spec"], request["variant"], request["batch"]
        if request["op"] == "ort_profile":
            kernels = _ort_profile(spec, variant, threads, batch, request["iters"])
            print("RESULT " + json.dumps(kernels), flush=True)
            continue
        run = _runner(kind, threads, cache, spec, variant, batch)
        if request["op"] == "time":
            images = np.random.RandomState(0).rand(batch, *spec["shape"]).astype(np.float32)
            result = {"times": _time(run, images, request["iters"])}
        else:
            result = {"pred": _predict(run, spec["test"], batch)}
        print("RESULT " + json.dumps(result), flush=True)
        if request.get("marker"):
            print(request["marker"], flush=True)


class Worker:
    """A worker process of one framework and thread count."""

    def __init__(self, kind, threads, python=sys.executable, env=None):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), **(env or {}))
        if kind == "mx":  # the engine inference/score.py runs on one CPU
            _mxcnn_importable()
            from mxcnn.common import runtime

            runtime.inference_engine([], env)
        self.kind = kind
        self.proc = subprocess.Popen(
            [python, SCRIPT, "--worker", kind, "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines = []

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(
                    "bench/inference.py: the %s worker died (%s)" % (self.kind, request["variant"])
                )
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
            self.lines.append(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
