"""The inference graph of a trained symbol: ``data -> probabilities``, no label input.

Built in one place for the trainer (which saves it beside every checkpoint as
``PREFIX-inference-symbol.json``) and for the inference tools that bind it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mxcnn.graph.symbol_json import head_op, is_true

if TYPE_CHECKING:
    import mxnet as mx

__all__ = ["inference_symbol"]


def inference_symbol(sym: mx.sym.Symbol, all_outputs: bool = False) -> mx.sym.Symbol:
    """``data -> probabilities``: each ``SoftmaxOutput`` head replaced by ``softmax`` (no label).

    Output 0 only (the main head of a deep-supervision symbol), or with ``all_outputs`` every
    head in the same order (what ``PREFIX-inference-symbol.json`` holds, so that the
    checkpoint's params file has no parameter the graph lacks).  Other heads (logits, Gluon
    exports) are kept unchanged.
    """
    import mxnet as mx
    count = len(sym.list_outputs())
    heads = []
    for index in range(count if all_outputs else 1):
        out = sym[index] if count > 1 else sym
        if head_op(out) == "SoftmaxOutput":
            multi = is_true(out.list_attr().get("multi_output", "False"))
            out = mx.sym.softmax(out.get_children()[0], axis=1 if multi else -1, name=out.name)
        heads.append(out)
    return heads[0] if len(heads) == 1 else mx.sym.Group(heads)
