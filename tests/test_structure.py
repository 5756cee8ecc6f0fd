"""The shape of the code: the module import graph has no cycle, the packages import only
downwards, and no module or function outgrows a reader's screen."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("common", "symbols", "graph", "data", "train", "inference", "distributed")
#: what each package may import (besides itself); everything may import ``common``
ALLOWED = {"common": set(), "symbols": set(), "graph": {"symbols"}, "data": set(),
           "inference": {"symbols", "graph", "data"},
           "train": {"symbols", "graph", "data", "inference"}, "distributed": set()}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def project_modules():
    """``{dotted name: path}`` of every module of the packages (``graph.inspector.cli``, ...)."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    found[".".join(parts)] = path
    return found


def _absolute(module, node, is_package):
    """The dotted target of an ``ImportFrom`` (``mxcnn.`` dropped, relative ones resolved)."""
    if node.level:
        base = module.split(".")[:len(module.split(".")) - node.level + (1 if is_package else 0)]
        return ".".join(base + ([node.module] if node.module else []))
    return (node.module or "").removeprefix("mxcnn.").removeprefix("mxcnn")


def imports_of(module, path, modules):
    """The project modules ``module`` imports, at any depth of its code (lazy imports too)."""
    tree = ast.parse(open(path).read())
    is_package = path.endswith("__init__.py")
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.removeprefix("mxcnn.") for a in node.names if a.name.startswith("mxcnn.")]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node, is_package)
            if node.module is None and node.level == 0:
                continue
            if not node.level and not (node.module or "").startswith("mxcnn"):
                continue
            full = [base + "." + a.name if base else a.name for a in node.names]
            # ``from pkg import name``: the module pkg.name where it is one, else pkg itself
            names = [n if n in modules else base for n in full]
        else:
            continue
        targets.update(n for n in names if n in modules)
    targets.discard(module)
    return targets


@pytest.fixture(scope="module")
def import_graph():
    modules = project_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle(import_graph):
    assert import_graph["train.fit"], "the import graph is empty: the parser lost the imports"
    assert _cycle(import_graph) is None, " -> ".join(_cycle(import_graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_packages_import_only_downwards(import_graph):
    wrong = sorted("%s imports %s" % (m, t) for m, targets in import_graph.items() for t in targets
                   if t.split(".")[0] not in ALLOWED[m.split(".")[0]] | {"common", m.split(".")[0]})
    assert not wrong, wrong


def test_modules_and_functions_stay_small():
    too_long = []
    for module, path in project_modules().items():
        source = open(path).read()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append("%s: %d lines" % (module, source.count("\n")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append("%s.%s: %d lines" % (module, node.name, length))
    assert not too_long, too_long


#: the packages whose public functions carry type hints (their callers are other packages)
TYPED_PACKAGES = ("common", "symbols", "graph", "data")


def _public_functions(tree):
    """Module-level functions and public methods of public classes, without a leading ``_``."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    yield node.name + "." + item.name, item


def _untyped(func):
    """The parameters (and ``return``) of ``func`` without an annotation."""
    args = func.args
    params = args.posonlyargs + args.args + args.kwonlyargs
    missing = [a.arg for a in params if a.annotation is None and a.arg not in ("self", "cls")]
    missing += ["*" + a.arg for a in (args.vararg, args.kwarg) if a is not None and a.annotation is None]
    return missing + ([] if func.returns is not None else ["return"])


def test_public_functions_of_the_lower_packages_are_typed():
    untyped = []
    for module, path in project_modules().items():
        if module.split(".")[0] in TYPED_PACKAGES:
            for name, func in _public_functions(ast.parse(open(path).read())):
                if _untyped(func):
                    untyped.append("%s.%s (%s)" % (module, name, ", ".join(_untyped(func))))
    assert not untyped, "%d public functions lack type hints: %s" % (len(untyped), untyped[:20])
