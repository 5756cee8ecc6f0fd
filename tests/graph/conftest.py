"""Shared by the graph-pass tests: a rewritten training graph must train as the original."""
import mxnet as mx
import numpy as np
import pytest

from mxcnn.graph import channel_pad
from mxcnn.train import fit


def _step(sym, arg_params, aux_params, data, label, dtype="float32"):
    """One forward+backward of ``sym``: (output, {arg: grad as float64}, {aux: value})."""
    exe = sym.simple_bind(mx.cpu(), data=data.shape, softmax_label=label.shape,
                          type_dict={"data": dtype})
    for name, value in list(arg_params.items()) + list(aux_params.items()):
        (exe.arg_dict[name] if name in exe.arg_dict else exe.aux_dict[name])[:] = value.astype(dtype)
    exe.arg_dict["data"][:] = data.astype(dtype)
    exe.arg_dict["softmax_label"][:] = label.astype(dtype)
    exe.forward(is_train=True)
    exe.backward()
    return (exe.outputs[0].asnumpy(),
            {n: exe.grad_dict[n].asnumpy().astype("f8") for n in arg_params},
            {n: exe.aux_dict[n].asnumpy() for n in aux_params})


def _same_training_step(sym, rewritten, shape, seed, dtype="float32"):
    """Assert one training step of ``rewritten`` gives ``sym``'s output, gradients and BN
    statistics on random data of ``shape`` (N, C, H, W), in float tolerance (statistics a
    graph.channel_pad graph holds padded are compared unpadded).

    A gradient may differ by 1e-4 of its size, or by 3x today's float32 error against
    float64 (ill-conditioned gradients, e.g. MobileNet's stem BatchNorm at batch 4, are off
    by several % in float32 whichever kernels sum them).  ``dtype="float64"`` runs both
    graphs in float64, where the gradients must agree to 1e-9 of their size: for networks
    whose float32 gradients are that ill-conditioned (GoogLeNet's BatchNorms over 4x4 maps).
    """
    mx.random.seed(seed)
    arg_params, aux_params = fit.initial_params(sym, shape)
    data = mx.nd.random.uniform(-1, 1, shape)
    label = mx.nd.array(np.arange(shape[0]) % 10)
    if dtype == "float64":
        return _same_float64_step(sym, rewritten, arg_params, aux_params, data, label)
    out_ref, grads_ref, aux_ref = _step(sym, arg_params, aux_params, data, label)
    padding = channel_pad.AuxPadding.of(rewritten)  # graph.channel_pad's padded statistics
    out, grads, aux = _step(rewritten, arg_params, padding.pad_params(aux_params), data, label)
    aux = {name: padding.unpad(name, mx.nd.array(value)).asnumpy() if name in padding.segments
           else value for name, value in aux.items()}
    _, grads64, _ = _step(sym, arg_params, aux_params, data, label, "float64")
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-6)
    for name in grads_ref:
        today = np.abs(grads_ref[name] - grads64[name]).max()
        tolerance = max(1e-4 * (np.abs(grads_ref[name]).max() + 1e-12), 3 * today)
        assert np.abs(grads[name] - grads_ref[name]).max() <= tolerance, name
    for name in aux_ref:
        np.testing.assert_allclose(aux[name], aux_ref[name], rtol=1e-5, atol=1e-6)


def _same_float64_step(sym, rewritten, arg_params, aux_params, data, label):
    padding = channel_pad.AuxPadding.of(rewritten)
    out_ref, grads_ref, _ = _step(sym, arg_params, aux_params, data, label, "float64")
    out, grads, _ = _step(rewritten, arg_params, padding.pad_params(aux_params), data, label,
                          "float64")
    np.testing.assert_allclose(out, out_ref, rtol=1e-9, atol=1e-12)
    for name in grads_ref:
        scale = np.abs(grads_ref[name]).max() + 1e-12
        assert np.abs(grads[name] - grads_ref[name]).max() <= 1e-9 * scale, name


@pytest.fixture
def same_training_step():
    return _same_training_step


# ------------------------------------------------------------------ headless Chromium (inspector page)

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,900")


def _browser_missing():
    import os
    import shutil
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium==4.27.1)"
    if not os.path.exists(CHROMEDRIVER):
        return "%s not found: run scripts/install_browser.sh (apt chromium chromium-driver)" % CHROMEDRIVER
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium not found: run scripts/install_browser.sh"
    return None


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium driven by Selenium (Debian's chromedriver); the tests that use it
    are skipped, with the reason printed, where the browser cannot be had."""
    import shutil
    reason = _browser_missing()
    if reason:
        print("SKIP browser tests: " + reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument("--user-data-dir=%s" % tmp_path_factory.mktemp("chromium-profile"))
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as err:  # the browser exists but cannot start here
        reason = "chromium could not start: %s" % str(err).splitlines()[0]
        print("SKIP browser tests: " + reason)
        pytest.skip(reason)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open_page(driver, path, timeout=60.0):
    """Load the inspector page at ``path`` and wait until its script has run and the canvas
    has drawn once; AssertionError after ``timeout`` s (a hang guard, not a speed claim)."""
    import time
    driver.get("file://" + str(path))
    deadline = time.time() + timeout
    while not driver.execute_script("return document.body && document.body.getAttribute('data-ready')"):
        assert time.time() < deadline, "page did not become ready within %.0f s" % timeout
        time.sleep(0.05)
    while driver.execute_script("return window.mxcnnInspect.stats.frames") < 1:
        assert time.time() < deadline, "canvas never drew"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def open_page():
    """``open_page(driver, path, timeout=60)``: load an inspector page and wait until ready."""
    return _open_page


# ------------------------------------------------------------------ crafted symbol files

#: node names aimed at each place the inspector page puts text; a payload that runs sets
#: ``window.__pwned`` (the number tells which context broke)
HOSTILE_NAMES = (
    "x' onmouseover='top.__pwned=1' onfocus='top.__pwned=1' autofocus tabindex='1",  # '-attribute
    'x" onmouseover="top.__pwned=2" onfocus="top.__pwned=2" data-x="',               # "-attribute
    '<img src=x onerror="top.__pwned=3">',                                          # HTML text
    "<!--<script>",                                 # script data double-escaped state: no ready
    "</script><script>top.__pwned=5</script>",      # leaving the data <script>
    "a\u2028b\u2029c &lt;i&gt; &amp; \\u003c \\",   # line separators, entities, escapes: kept as text
)
#: an attribute value (shown in the details panel) and a file name (the page title)
HOSTILE_ATTR = "<svg onload=top.__pwned=7>'\""
HOSTILE_FILE = "x\"><img src=x onerror=top.__pwned=8>.json"
#: operators MXNet loads but the MAC counter does not know: each name is in a warning
UNKNOWN_OPS = ("sin", "cos", "tan", "arcsin", "arccos", "arctan")


def _write_hostile_symbol(folder):
    """A symbol JSON (a chain of uncounted operators named HOSTILE_NAMES, with HOSTILE_ATTR)
    named HOSTILE_FILE in ``folder``; its path.  Written as MXNet writes (no \\u escapes:
    MXNet's JSON reader takes none)."""
    import json
    import os
    nodes = [{"op": "null", "name": "data", "inputs": []}]
    for i, (name, op) in enumerate(zip(HOSTILE_NAMES, UNKNOWN_OPS)):
        nodes.append({"op": op, "name": name, "attrs": {"__note__": HOSTILE_ATTR},
                      "inputs": [[i, 0, 0]]})
    graph = {"nodes": nodes, "arg_nodes": [0], "node_row_ptr": list(range(len(nodes) + 1)),
             "heads": [[len(nodes) - 1, 0, 0]], "attrs": {"mxnet_version": ["int", 10901]}}
    path = os.path.join(str(folder), HOSTILE_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(graph, ensure_ascii=False))
    return path


@pytest.fixture
def hostile_symbol(tmp_path):
    """A crafted symbol JSON: ``.path``, and what it holds: ``.names`` (HOSTILE_NAMES),
    ``.attr`` (an attribute value) and ``.title`` (its file name, the page's title)."""
    import types
    return types.SimpleNamespace(path=_write_hostile_symbol(tmp_path), names=HOSTILE_NAMES,
                                 attr=HOSTILE_ATTR, title=HOSTILE_FILE)
