"""The docs say where each concept lives, and that stays true as modules come and go."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("package", ["kt_pipeline", "hypermodels"])
def test_the_layout_page_names_every_module_and_no_other(package: str) -> None:
    layout = (ROOT / "docs" / "pages" / "layout.md").read_text(encoding="utf-8")
    section = layout.split(f"## `{package}/`", 1)[1].split("\n## ", 1)[0]
    named = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    modules = {path.name for path in (ROOT / package).glob("*.py")}
    assert named == modules


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def _imports(path: Path, packages: tuple[str, ...]) -> set[str]:
    """The package modules a module imports anywhere, in a function too (but not for
    type checking alone)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in packages}
    return found


def test_nothing_imports_in_a_circle() -> None:
    packages = ("kt_pipeline", "hypermodels")
    modules = {
        f"{package}.{path.stem}" if path.stem != "__init__" else package: path
        for package in packages
        for path in (ROOT / package).glob("*.py")
    }
    graph = {name: _imports(path, packages) & set(modules) for name, path in modules.items()}
    for package in packages:  # a package's own __init__ is where its modules start from
        graph = {n: deps - {package} for n, deps in graph.items()}
    cycles = []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(graph[name]):
            if dep in path:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in done:
                done.add(dep)
                visit(dep, [*path, dep], done)

    for name in sorted(graph):
        visit(name, [name], {name})
    assert not cycles, sorted(set(cycles))[:5]
