"""The layout holds: one import root, folders in layers, no import cycles.

Every module of the installed package is read (not imported) and each import of a
``punchcard`` module, wherever it stands (top level, inside a function, under
``TYPE_CHECKING``), is an edge. A module may import its own folder or a lower layer;
folders of the same layer stay independent.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import punchcard

ROOT = Path(punchcard.__file__).parent

# Lowest first. A module may import modules of its own folder and of lower layers.
LAYERS: list[set[str]] = [
    {"punchcard.settings", "punchcard.internals", "punchcard.tasks", "punchcard.logs"}
    | {"punchcard.metrics"},
    {"punchcard.db"},
    {"punchcard.gql"},
    {"punchcard.live"},
    {"punchcard.resolvers", "punchcard.sweeper"},
    {"punchcard.server"},
    {"punchcard.__main__"},
]
FOLDERS = ("db", "gql", "live", "resolvers", "sweeper", "server")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    paths = [
        Path(folder, file)
        for folder, _, files in os.walk(ROOT, followlinks=True)  # through the folder links
        for file in files
        if file.endswith(".py")
    ]
    for path in sorted(paths):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("punchcard", *parts))] = path
    return found


MODULES = modules()


def imports(name: str, path: Path) -> Iterator[str]:
    """The punchcard modules ``name`` imports (``from a import b``: ``a.b`` if a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target == "punchcard" or target.startswith("punchcard."):
                while target not in MODULES:  # punchcard.db.errors.Code -> punchcard.db.errors
                    target = target.rpartition(".")[0]
                if target != name and target != "punchcard":
                    yield target


GRAPH = {name: sorted(set(imports(name, path))) for name, path in MODULES.items()}


def layer_of(module: str) -> tuple[int, str]:
    if module == "punchcard":  # the root package: a docstring and the version
        return 0, module
    for rank, group in enumerate(LAYERS):
        for owner in group:
            if module == owner or module.startswith(owner + "."):
                return rank, owner
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_every_folder_is_reached_through_the_one_import_root() -> None:
    for folder in FOLDERS:
        assert f"punchcard.{folder}" in MODULES, f"punchcard/{folder} does not lead to {folder}/"
    assert len(MODULES) > 40  # the walk really read the folders behind the links


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_its_own_folder_or_lower_layers(module: str) -> None:
    rank, owner = layer_of(module)
    wrong = []
    for target in GRAPH[module]:
        target_rank, target_owner = layer_of(target)
        if target_rank > rank or (target_rank == rank and target_owner != owner):
            wrong.append(target)
    assert not wrong, f"{module} ({owner}) imports {wrong} from a higher or sibling layer"


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over every import edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_walk_sees_edges() -> None:
    """The checks above would pass on an empty graph: make sure they do not look at one."""
    assert "punchcard.gql.context" in GRAPH["punchcard.gql.engine"]
    assert "punchcard.resolvers" in GRAPH["punchcard.server.app"]
    assert "punchcard.db.listen" in GRAPH["punchcard.sweeper.worker"]
