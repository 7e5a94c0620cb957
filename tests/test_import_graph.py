"""The package's layers import one way: the graph of `labelmatch.X -> labelmatch.Y` imports
between its subpackages (data, method, callbacks, ...) and top-level modules (run, cli, ...) has
no cycle. Read from the source with `ast`, so an import inside a function counts too; one under
`if TYPE_CHECKING:` does not (it never runs)."""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.conftest import REPO

PACKAGE = REPO / "labelmatch"


def node(module: str) -> str:
    """labelmatch.method.module -> "method"; labelmatch.run -> "run"."""
    return module.split(".")[1]


def runtime_imports(tree: ast.Module) -> list[str]:
    """The absolute `labelmatch.*` modules a file imports, except under `if TYPE_CHECKING:`."""
    found: list[str] = []

    def visit(statement: ast.AST) -> None:
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            for child in statement.orelse:
                visit(child)
            return
        if isinstance(statement, ast.Import):
            found.extend(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
            if statement.module == "labelmatch":  # from labelmatch import run
                found.extend(f"labelmatch.{alias.name}" for alias in statement.names)
            elif statement.module:
                found.append(statement.module)
        for child in ast.iter_child_nodes(statement):
            visit(child)

    visit(tree)
    return [name for name in found if name.startswith("labelmatch.")]


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{node: {imported node: ["file -> module", ...]}}, self-imports left out."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO)
        module = ".".join(relative.with_suffix("").parts)
        if module == "labelmatch.__init__":
            continue
        for imported in runtime_imports(ast.parse(path.read_text())):
            source, target = node(module), node(imported)
            exists = (PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").is_file()
            if source != target and exists:
                graph[source][target].append(f"{relative} -> {imported}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in list(graph):
        if v not in index:
            connect(v)
    return components


def test_the_subpackages_and_top_level_modules_import_without_a_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    explained = [
        edge
        for component in found
        for a in component
        for b in component
        for edge in graph[a].get(b, [])
    ]
    assert not found, f"import cycles {found}:\n" + "\n".join(explained)


def test_the_cycle_finder_finds_a_cycle_and_names_no_acyclic_one() -> None:
    assert cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [
        ["a", "b", "c"]
    ]
    assert cycles({"a": {"b": []}, "b": {"c": []}, "d": {"a": []}}) == []


def test_type_checking_imports_do_not_count() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import labelmatch.run\n"
    assert runtime_imports(ast.parse(source)) == []
    assert runtime_imports(ast.parse("def f():\n    import labelmatch.run\n")) == ["labelmatch.run"]
