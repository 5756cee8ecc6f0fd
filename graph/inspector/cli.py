"""``mxcnn-inspect`` / ``python -m mxcnn.graph.inspector``: the inspector's command line.

    python -m mxcnn.graph.inspector resnet --num-layers 20 --html resnet20.html --svg resnet20.svg
    python -m mxcnn.graph.inspector model-symbol.json --input-shape data=1,3,224,224 --sort-by macs

Bad input or an environment problem (a path that cannot be written, a size MXNet cannot
take) is a :class:`common.UserError`: one line ``mxcnn-inspect: error: ...`` and exit 2.
"""
import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence

from mxcnn import common
from mxcnn.graph.inspector.analysis import load_symbol, max_dimension, summarize
from mxcnn.graph.inspector.render import write_graphviz, write_html, write_output
from mxcnn.graph.inspector.summary import GROUP_BY, SORT_KEYS, InspectError, Summary

__all__ = ["build_parser", "run", "main", "MAX_LAYERS"]

PROG = "mxcnn-inspect"
#: --num-layers above this is refused rather than built: building is linear in depth
#: (ResNet-9998 builds and is inspected in ~6 s here), and the deepest networks in the papers
#: have 1202 (ResNet) and 1001 (PreAct) layers.
MAX_LAYERS = 10000


def _shape_arg(text):
    try:
        name, dims = text.split("=", 1)
        shape = tuple(int(v) for v in dims.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InspectError("--input-shape wants NAME=N,C,H,W (e.g. data=1,3,224,224), got %r" % text)
    if not name or not shape or min(shape) <= 0:
        raise InspectError("--input-shape wants NAME=N,C,H,W with positive sizes, got %r" % text)
    return name.strip(), shape


def _option_arg(text):
    if "=" not in text:
        raise InspectError("--option wants key=value (e.g. widen_factor=4), got %r" % text)
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except ValueError:
        pass  # keep strings such as shortcut_type=A
    return key.strip(), value


def _check_range(flag, value, high, why):
    """InspectError unless ``1 <= value <= high``; ``why`` explains the upper bound."""
    if not 1 <= value <= high:
        raise InspectError("%s must be between 1 and %d (%s), got %d" % (flag, high, why, value))


def _check_sizes(args, image_shape):
    """Refuse sizes MXNet cannot take (int32 shapes) before MXNet sees them."""
    limit, why = max_dimension(), "the largest size MXNet takes in one dimension"
    _check_range("--batch-size", args.batch_size, limit, why)
    _check_range("--num-classes", args.num_classes, limit, why)
    for size in image_shape:
        _check_range("each --image-shape size", size, limit, why)
    if args.num_layers is not None:
        _check_range("--num-layers", args.num_layers, MAX_LAYERS,
                     "ten times the deepest network in the papers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Per-layer output shapes, parameters, MACs and activation memory of any MXNet "
                    "symbol (a registered network name or a prefix-symbol.json), with Graphviz "
                    "and an interactive offline HTML view.",
        epilog="MACs count conv/deconv/FC/dot multiply-accumulates for the given batch (bias "
               "excluded); BN, activations, pooling and element-wise arithmetic are in the "
               "'Other ops' column. Unknown operators count 0 and are marked (?).")
    parser.add_argument("network", help="registered network name (see symbols.list_networks()) "
                                        "or path to an MXNet symbol JSON file")
    parser.add_argument("--num-layers", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-shape", default="3,32,32", help="C,H,W (default 3,32,32)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="family option for a registered network, repeatable")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        help="shape of a data input, repeatable (default data=BATCH,C,H,W)")
    parser.add_argument("--group-by", choices=GROUP_BY, default="none")
    parser.add_argument("--sort-by", choices=SORT_KEYS, default=None)
    parser.add_argument("--html", metavar="PAGE", help="write the interactive HTML page")
    parser.add_argument("--dot", metavar="FILE", help="write Graphviz DOT text")
    parser.add_argument("--svg", metavar="FILE", help="write SVG (needs Graphviz's dot)")
    parser.add_argument("--pdf", metavar="FILE", help="write PDF (needs Graphviz's dot)")
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    return parser


def _summary_of(args):
    """The Summary the arguments ask for (InspectError on bad input)."""
    try:
        from mxcnn import symbols
        image_shape = symbols.as_image_shape(args.image_shape)
    except ValueError as err:
        raise InspectError(str(err))
    _check_sizes(args, image_shape)
    options = dict(_option_arg(o) for o in args.option)
    sym = load_symbol(args.network, args.num_layers, args.num_classes, image_shape, options)
    shapes = dict(_shape_arg(s) for s in args.input_shape)
    if not shapes:
        if "data" not in sym.list_arguments():
            raise InspectError("the symbol has no input named 'data'; give its input shapes with "
                               "--input-shape NAME=N,C,H,W (arguments: %s)"
                               % common.short_list(sym.list_arguments()))
        shapes = {"data": (args.batch_size,) + image_shape}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported in the table footer instead
        summary = summarize(sym, **shapes)
    summary.name = os.path.basename(args.network) if args.network.endswith(".json") else (
        args.network + ("-%d" % args.num_layers if args.num_layers else ""))
    return summary


def _print(text):
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as err:  # stdout on a full disk, /dev/full, ...
        raise InspectError("cannot print the table (%s); use --quiet or another output"
                           % (err.strerror or err))


def run(args: argparse.Namespace) -> Summary:
    """Carry out parsed arguments; returns the Summary (raises InspectError on bad input)."""
    summary = _summary_of(args)
    if not args.quiet:
        _print(summary.render(group_by=args.group_by, sort_by=args.sort_by))
    for path, fmt in ((args.dot, "dot"), (args.svg, "svg"), (args.pdf, "pdf")):
        if path:
            write_graphviz(summary, path, fmt)
    if args.html:
        write_html(summary, args.html)
    if args.json:
        write_output(args.json, json.dumps(summary.to_json_dict(), indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: 0 on success, 2 (one line on stderr) on a :class:`common.UserError`."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except common.UserError as err:
        return common.cli_error(PROG, err)
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    return 0
