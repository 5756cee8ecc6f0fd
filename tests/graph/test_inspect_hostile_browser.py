"""Graph pages of crafted symbol files in headless Chromium: no script of the file runs, no
element or ``on*`` attribute is injected, its text shows as text, and the page becomes ready.

Uses the ``browser``, ``open_page`` and ``hostile_symbol`` fixtures of conftest.py (skipped,
with the reason printed, where Chromium cannot be had)."""
import pytest

from mxcnn.graph import inspector as insp

pytestmark = pytest.mark.browser

#: every element the page's own markup and script create
_PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "div", "span",
              "input", "button", "main", "canvas", "aside", "em", "table", "thead", "tbody", "tr",
              "th", "td", "script", "h2", "h3"}

#: (did a payload run, tags in the document, on* attributes, <script> elements)
_AUDIT = """
var tags = {}, on = [], all = document.getElementsByTagName("*");
for (var i = 0; i < all.length; i++) {
  tags[all[i].tagName.toLowerCase()] = 1;
  for (var k = 0; k < all[i].attributes.length; k++) {
    var a = all[i].attributes[k].name;
    if (a.toLowerCase().indexOf("on") === 0) on.push(all[i].tagName + "." + a);
  }
}
return [window.__pwned === undefined ? null : String(window.__pwned), Object.keys(tags).sort(), on,
        document.getElementsByTagName("script").length];
"""

#: mouse and focus events on every element (what the injected handlers listened for)
_POKE = """
var all = document.getElementsByTagName("*");
for (var i = 0; i < all.length; i++) {
  ["mouseover", "mouseenter", "mousemove", "click"].forEach(function (t) {
    if (t === "click" && !all[i].closest("#details, #totals")) return;
    all[i].dispatchEvent(new MouseEvent(t, {bubbles: true}));
  });
  if (all[i].focus) all[i].focus();
}
"""


def _assert_nothing_ran_or_was_injected(browser, when):
    from selenium.common.exceptions import NoAlertPresentException
    pwned, tags, on, scripts = browser.execute_script(_AUDIT)
    assert pwned is None, "a payload of the symbol file ran (window.__pwned=%s) %s" % (pwned, when)
    assert on == [], "event-handler attributes injected %s: %s" % (when, on)
    assert set(tags) <= _PAGE_TAGS, "elements injected %s: %s" % (when, set(tags) - _PAGE_TAGS)
    assert scripts == 2, "%d <script> elements %s" % (scripts, when)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.accept()


def test_crafted_symbol_page_runs_nothing_and_works(browser, open_page, hostile_symbol, tmp_path):
    page = tmp_path / "crafted.html"
    assert insp.main([hostile_symbol.path, "--html", str(page), "--quiet"]) == 0
    open_page(browser, page, timeout=60)  # "<!--<script>" once left the page blank, never ready
    _assert_nothing_ran_or_was_injected(browser, "on load")
    assert browser.title == hostile_symbol.title + " - mxcnn inspect"
    assert browser.find_element("id", "title").get_attribute("textContent") == hostile_symbol.title
    # the warnings name the nodes, whole, in the tooltip of the "not counted" mark
    warn = browser.find_element("css selector", "#totals .warn")
    assert all(name in warn.get_attribute("title") for name in hostile_symbol.names)
    # names show as text in the table, one row each, in order
    cells = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#summary tbody tr td:first-child'),"
        " function (td) { return td.textContent; })")
    assert cells == list(hostile_symbol.names)
    # each node's details: its name as the heading, the crafted attribute as text
    for name in hostile_symbol.names:
        node = browser.execute_script("return window.mxcnnInspect.findNode(arguments[0])", name)
        assert node >= 0, name
        browser.execute_script("window.mxcnnInspect.select(arguments[0])", node)
        details = browser.find_element("id", "details")
        assert browser.find_element("id", "details-title").get_attribute("textContent") == name
        assert hostile_symbol.attr in details.get_attribute("textContent")
        _assert_nothing_ran_or_was_injected(browser, "after selecting %r" % name)
    for header in browser.find_elements("css selector", "#summary th"):  # re-rendered tables
        header.click()
    browser.execute_script(_POKE)
    _assert_nothing_ran_or_was_injected(browser, "after sorting, hovering and focusing")
