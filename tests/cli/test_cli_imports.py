"""The ``aib_sdk.cli`` package has no import cycle: the module-level imports among its modules (those that run
when a module loads, ``TYPE_CHECKING`` blocks included) form a graph without a cycle, and so do all its imports
(the lazy ones inside functions too: no two modules lean on each other). Read from the source with ``ast``, so a
cycle fails here even when the import order happens to hide it at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aib_sdk.cli

PACKAGE = "aib_sdk.cli"
ROOT = Path(aib_sdk.cli.__file__).parent


def module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


MODULES = {module_name(path): path for path in sorted(ROOT.glob("*.py"))}


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative imports resolved against ``importer``)."""
    if not node.level:
        return node.module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def module_level_imports(tree: ast.Module, *, lazy: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Imports outside functions and classes' methods: at the top, under ``if``/``try``/``with`` blocks (with
    ``lazy``, every import, those inside functions too)."""
    if lazy:
        return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            pending.extend(node.body)
            pending.extend(getattr(node, "orelse", []))
            pending.extend(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)
    return found


def edges(importer: str, tree: ast.Module, *, lazy: bool = False) -> set[str]:
    """The ``aib_sdk.cli`` modules that ``importer`` imports when it loads (with ``lazy``: ever)."""
    targets: set[str] = set()
    for node in module_level_imports(tree, lazy=lazy):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = resolve(importer, node)
            # ``from aib_sdk.cli import build`` imports the submodule; ``from aib_sdk.cli import main`` the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        targets.update(name for name in names if name in MODULES and name != importer)
    return targets


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    return {name: edges(name, ast.parse(path.read_text(), str(path)), lazy=lazy) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or ``None``."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cli_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert {"aib_sdk.cli.app", "aib_sdk.cli.build", "aib_sdk.cli.output"} <= set(graph)
    assert "aib_sdk.cli.app" in graph[PACKAGE]  # the graph is read, not empty
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in aib_sdk.cli: " + " -> ".join(cycle or [])
    lazy = import_graph(lazy=True)
    assert "aib_sdk.cli.build" in lazy["aib_sdk.cli.app"]  # ``aib build`` loads its module on first use
    cycle = find_cycle(lazy)
    assert cycle is None, "import cycle in aib_sdk.cli (imports inside functions included): " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("sources", "cycle", "lazy_cycle"),
    [
        ({"a": "from aib_sdk.cli import b\n", "b": "import aib_sdk.cli.a\n"}, ["a", "b", "a"], True),
        (
            {"a": "if TYPE_CHECKING:\n    from aib_sdk.cli.b import X\n", "b": "from . import a\n"},
            ["a", "b", "a"],
            True,
        ),
        ({"a": "def f():\n    from aib_sdk.cli.b import X\n", "b": "from aib_sdk.cli.a import Y\n"}, None, True),
        ({"a": "from aib_sdk.cli.b import X\n", "b": "from aib_sdk.cli.c import Y\n", "c": ""}, None, False),
    ],
)
def test_the_check_finds_cycles(
    sources: dict[str, str], cycle: list[str] | None, lazy_cycle: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, text in sources.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.setattr(
        f"{__name__}.MODULES", {f"{PACKAGE}.{name}": tmp_path / f"{name}.py" for name in sources}, raising=True
    )
    found = find_cycle(import_graph())
    assert found == (None if cycle is None else [f"{PACKAGE}.{name}" for name in cycle])
    assert (find_cycle(import_graph(lazy=True)) is not None) == lazy_cycle
