"""graph.symbol_json: a pass that renames or drops an argument, state or output is caught."""
import json

import mxnet as mx
import pytest

from mxcnn.graph import symbol_json


def _net():
    x = mx.sym.var("data")
    conv = mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), name="conv")
    return mx.sym.BatchNorm(conv, name="bn")


def test_an_unchanged_graph_loads_back():
    sym = _net()
    loaded = symbol_json.load_rewritten(json.loads(sym.tojson()), sym, "a pass")
    assert loaded.tojson() == sym.tojson()


@pytest.mark.parametrize("rename, listing", [("conv_weight", "list_arguments"),
                                             ("bn_moving_mean", "list_auxiliary_states"),
                                             ("bn", "list_outputs")])
def test_a_renamed_name_is_a_bug_of_the_pass(rename, listing):
    sym = _net()
    graph = json.loads(sym.tojson())
    next(n for n in graph["nodes"] if n["name"] == rename)["name"] = rename + "_x"
    with pytest.raises(AssertionError, match="a pass changed the symbol's interface \\(%s\\)"
                       % listing):
        symbol_json.load_rewritten(graph, sym, "a pass")
