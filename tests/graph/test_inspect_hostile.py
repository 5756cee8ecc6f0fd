"""The graph page of a crafted symbol file, as text: every value from the file is escaped for
the context it lands in (the browser's view of the same pages: test_inspect_hostile_browser.py)."""
import html.parser
import json
import re
import warnings

import pytest

from mxcnn.graph import inspector as insp
from mxcnn.graph.inspector import render

_UNSAFE_IN_SCRIPT = ("<", ">", "&", "\u2028", "\u2029")


@pytest.mark.parametrize("text", ["<!--<script>", "</script><script>alert(1)</script>",
                                  "a & b > c", "x\u2028y\u2029z", "</SCRIPT >", "\\u003c", "]]>",
                                  "é\U0001f600"])
def test_script_json_is_inert_and_reads_back(text):
    value = {"name": text, "list": [text, 1, 2.5, None, True], text: "key"}
    out = render.script_json(value)
    for char in _UNSAFE_IN_SCRIPT:
        assert char not in out
    assert out.isascii()
    assert json.loads(out) == value


class _Page(html.parser.HTMLParser):
    """Tags, attributes, <title> text and <script> contents of a page, as a browser parses them."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.title, self.scripts, self._in = [], [], "", [], None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]
        self._in = tag
        if tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "script":
            self.scripts[-1] += data


def _page(tmp_path, symbol_path):
    page = tmp_path / "page.html"
    assert insp.main([symbol_path, "--html", str(page), "--quiet"]) == 0
    return page.read_text(encoding="utf-8")


def test_crafted_names_stay_data_in_the_page(tmp_path, hostile_symbol):
    text = _page(tmp_path, hostile_symbol.path)
    template = _Page(open(render._TEMPLATE, encoding="utf-8").read())
    page = _Page(text)
    # the page has exactly the template's elements and attributes: nothing injected
    assert page.tags == template.tags
    assert sorted(set(page.attrs)) == sorted(set(template.attrs))
    assert not [a for a in page.attrs if a.startswith("on")]
    assert page.title == "%s - mxcnn inspect" % hostile_symbol.title
    # the inline data can neither end its <script> nor enter another parser state
    raw = re.search(r'id="mxcnn-data">(.*?)</script>', text, re.S).group(1)
    for char in _UNSAFE_IN_SCRIPT:
        assert char not in raw
    data = json.loads(page.scripts[0])
    assert [row[0] for row in data["rows"]] == list(hostile_symbol.names)
    assert all(row[11]["__note__"] == hostile_symbol.attr for row in data["rows"])
    assert data["title"] == hostile_symbol.title
    # every unknown-operator warning names its node, intact
    assert len(data["warnings"]) == len(hostile_symbol.names)
    for warning, name in zip(data["warnings"], hostile_symbol.names):
        assert name in warning


def test_a_title_holding_the_data_marker_is_only_a_title(tmp_path):
    from mxcnn import symbols
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = insp.summarize(symbols.get_symbol("lenet", image_shape=(1, 28, 28)),
                                 data=(1, 1, 28, 28))
    title = "/*__MXCNN_DATA__*/null __MXCNN_TITLE__ </title><script>top.x=1</script>"
    page = _Page(render.html_page(summary, title))
    assert page.title == title + " - mxcnn inspect"
    assert json.loads(page.scripts[0])["title"] == title
    assert page.tags.count("script") == 2
