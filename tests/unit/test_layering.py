"""The layering of ARCHITECTURE.md §1, read off the code: imports go downwards only, no import
cycle between modules, no module outside tests over 450 lines.

Every ``import`` / ``from … import`` statement counts, also those inside functions (a lazy import
is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from config import REPO_ROOT

#: Floor of each top-level package: a module may import from its own floor's package or lower floors.
FLOORS = {
    "config": 0, "schemas": 1, "components": 2, "infra": 2, "streams": 3,
    "agents": 4, "pipelines": 4, "worker": 5, "eddy": 6,
}
#: Packages on one floor that still must not import each other.
SIBLINGS_APART = {("agents", "pipelines"), ("pipelines", "agents"), ("components", "infra"), ("infra", "components")}
MAX_LINES = 450


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in FLOORS:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``path`` imports (``from pkg import mod`` resolves to ``pkg.mod`` when it is a module)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def test_the_project_has_the_layers_it_claims(graph):
    packages = {name.split(".")[0] for name in graph}
    assert packages == set(FLOORS), packages
    assert len(graph) > 50  # the walk saw the modules, not an empty tree


def test_imports_go_downwards_only(graph):
    upward = []
    for name, targets in graph.items():
        own = name.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if FLOORS[other] > FLOORS[own] or (own, other) in SIBLINGS_APART:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that run upwards or across:\n" + "\n".join(sorted(upward))


def test_no_import_cycle(graph):
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_over_the_size_limit():
    long = {str(path.relative_to(REPO_ROOT)): n for path in project_modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """Positive control: a module of ``streams`` importing ``agents`` is reported."""
    fake = tmp_path / "streams" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("from agents.indexer import Indexer\n")
    assert imports_of(fake, "streams.bad", {"streams.bad": fake, "agents.indexer": fake}) == {"agents.indexer"}
