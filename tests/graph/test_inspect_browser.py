"""The inspection page in a real headless Chromium (Selenium + Debian's chromedriver).

Set-up: scripts/install_browser.sh (apt: chromium, chromium-driver, graphviz).  Where the
browser cannot be had the tests are skipped, and the reason is printed (the ``browser``
and ``open_page`` fixtures are in conftest.py).  Speed is measured in bench/, not here.
"""
import time

import numpy as np
import pytest

from mxcnn.graph import inspector as insp

pytestmark = pytest.mark.browser


def _pixel_variance(driver):
    import cv2
    png = driver.get_screenshot_as_png()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    canvas = driver.find_element("id", "canvas")
    r = canvas.rect
    graph = image[int(r["y"]):int(r["y"] + r["height"]), int(r["x"]):int(r["x"] + r["width"])]
    return float(image.var()), float(graph.var())


def _click_node(driver, index):
    from selenium.webdriver.common.action_chains import ActionChains
    canvas = driver.find_element("id", "canvas")
    x, y = driver.execute_script("return window.mxcnnInspect.nodeScreenPoint(arguments[0])", index)
    r = canvas.rect
    # Selenium 4 offsets are from the element's centre
    ActionChains(driver).move_to_element_with_offset(
        canvas, int(x - r["width"] / 2), int(y - r["height"] / 2)).click().perform()


def _resnet20_summary():
    from mxcnn import symbols
    return insp.summarize(symbols.get_symbol("resnet", num_layers=20), data=(1, 3, 32, 32))


def test_page_renders_and_node_click_shows_details(browser, open_page, tmp_path):
    page = tmp_path / "resnet20.html"
    insp.write_html(_resnet20_summary(), str(page))
    open_page(browser, page)
    whole, graph = _pixel_variance(browser)
    assert graph > 50, "graph area looks blank (pixel variance %.1f)" % graph
    data_nodes = browser.execute_script("return window.mxcnnInspect.data.nodes.length")
    # click the first convolution node with the mouse (canvas hit test)
    index = browser.execute_script(
        "var n = window.mxcnnInspect.data.nodes; for (var i = 0; i < n.length; i++)"
        " if (n[i][3].indexOf('Conv') === 0) return i; return -1;")
    assert 0 < index < data_nodes
    title = browser.execute_script("return window.mxcnnInspect.data.nodes[arguments[0]][2]", index)
    _click_node(browser, index)
    details = browser.find_element("id", "details")
    assert browser.find_element("id", "details-title").text == title
    assert "Convolution" in details.text and "MACs" in details.text
    assert "kernel" in details.text  # operator attributes are listed
    # the summary table row of that layer is highlighted
    selected = browser.find_elements("css selector", "#summary tr.selected")
    assert selected and title in selected[0].text
    # a click on a table row focuses the node of that layer
    rows = browser.find_elements("css selector", "#summary tbody tr")
    rows[-1].click()
    last_layer = rows[-1].find_elements("tag name", "td")[0].text
    assert last_layer in browser.find_element("id", "details").text
    sel = browser.execute_script("return window.mxcnnInspect.data.rows[%d][9]" % (len(rows) - 1))
    x, y = browser.execute_script("return window.mxcnnInspect.nodeScreenPoint(arguments[0])", sel)
    r = browser.find_element("id", "canvas").rect
    assert 0 <= x <= r["width"] and 0 <= y <= r["height"], "focused node is off screen"


def test_1001_layer_page_loads_and_navigates(browser, open_page, tmp_path):
    from mxcnn import symbols
    sym = symbols.get_symbol("preact_resnet", num_layers=1001)
    start = time.time()
    summary = insp.summarize(sym, data=(1, 3, 32, 32))
    page = tmp_path / "preact1001.html"
    insp.write_html(summary, str(page))
    generation = time.time() - start
    assert len(summary.rows) > 3000
    start = time.time()
    open_page(browser, page, timeout=120)  # a hang guard only
    load = time.time() - start
    ready_ms = browser.execute_script("return window.mxcnnInspect.readyMs")
    print("preact_resnet-1001: %d layers, %d nodes; generate %.2f s, browser load+first frame %.2f s "
          "(script %.0f ms)" % (len(summary.rows), browser.execute_script(
              "return window.mxcnnInspect.data.nodes.length"), generation, load, ready_ms))
    assert _pixel_variance(browser)[1] > 50
    # jump to the deepest layer through the table and click it on the canvas
    last = len(summary.rows) - 1
    browser.execute_script("window.mxcnnInspect.selectRow(arguments[0])", last)
    node = browser.execute_script("return window.mxcnnInspect.data.rows[arguments[0]][9]", last)
    _click_node(browser, node)
    assert summary.rows[last].name in browser.find_element("id", "details").text
    # the fitted whole graph draws (a new frame; its time is printed, not asserted)
    frames = browser.execute_script("return window.mxcnnInspect.stats.frames")
    browser.execute_script("window.mxcnnInspect.fit()")
    deadline = time.time() + 60
    while browser.execute_script("return window.mxcnnInspect.stats.frames") == frames:
        assert time.time() < deadline, "the fitted graph never drew"
        time.sleep(0.05)
    print("fitted frame: %.0f ms" % browser.execute_script("return window.mxcnnInspect.stats.lastDrawMs"))
