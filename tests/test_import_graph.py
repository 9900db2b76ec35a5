"""The import graph of the featherface package: no cycle among module-level imports, no import of a module that
does not exist.

The graph is read from the source (``ast``), not by importing: every ``import featherface...`` /
``from featherface... import ...`` statement (and relative import) of every module, split into those that run when
the module is imported (module level, class bodies, ``try`` / ``if`` blocks outside ``if TYPE_CHECKING``) and those
inside functions. A cycle among the first kind only works as long as nothing imports the modules in another order;
an in-function import that names a moved module fails only when that function runs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = "featherface"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


@dataclass
class ModuleImports:
    """The featherface modules one module imports: ``top`` at import time, ``lazy`` inside functions."""

    top: set[str] = field(default_factory=set)
    lazy: set[str] = field(default_factory=set)
    #: (line, imported module) of every featherface import, for messages about modules that do not exist.
    named: list[tuple[int, str]] = field(default_factory=list)


def module_name(path: Path) -> str:
    """``featherface/models/convert.py`` -> ``featherface.models.convert`` (a package's ``__init__`` -> the package)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: set[str]) -> list[str]:
    """The featherface modules an import statement loads: the module itself and, for ``from m import x``, ``m.x``
    when that is a submodule."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != PACKAGE:
        return []
    found = [source]
    found += [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules]
    return found


def read_imports(name: str, path: Path, modules: set[str]) -> ModuleImports:
    """The featherface imports of one module, split into import-time and in-function ones."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    result = ModuleImports()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(node, name, is_package, modules):
                (result.lazy if in_function else result.top).add(target)
                result.named.append((node.lineno, target))
            return
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return result


def import_graph() -> dict[str, ModuleImports]:
    modules = all_modules()
    names = set(modules)
    return {name: read_imports(name, path, names) for name, path in modules.items()}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:  # Tarjan's algorithm
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return cycles


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert {"featherface.models.checkpoints", "featherface.models.convert", "featherface.models.backbone"} <= set(graph)
    assert "featherface.models.convert" in graph["featherface.models.backbone"].top
    assert "featherface.models.checkpoints" in graph["featherface.models.convert"].top


def test_no_cycle_among_module_level_imports() -> None:
    # A package's own __init__ importing its submodules is no cycle (importing a submodule first runs the package's
    # __init__, which imports that submodule in full): only imports written in the source are edges.
    graph = import_graph()
    cycles = find_cycles({name: imports.top for name, imports in graph.items()})
    assert not cycles, "import cycles among module-level imports:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_imported_featherface_module_exists() -> None:
    graph = import_graph()
    missing = [f"{name}:{line} imports {target}" for name, imports in graph.items()
               for line, target in imports.named if target not in graph]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"a"}}, [["a"]]),
])
def test_find_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert find_cycles(edges) == expected
