"""The house rules of labstack/: a small core that verbs build on, no import cycle, and the payload apart."""

from __future__ import annotations

import ast
from pathlib import Path

from labstack import ROOT

PACKAGE = ROOT / "labstack"
CORE = {"labstack", "labstack.errors", "labstack.paths", "labstack.matrix", "labstack.engine", "labstack.gpu",
        "labstack.hosts", "labstack.payload", "labstack.settings", "labstack.cli", "labstack.children"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the labstack modules it imports (anywhere in the file), from the source."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "checks" in path.relative_to(PACKAGE).parts:
            continue  # the shipped checks are pytest files: they import the library, nothing imports them
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("labstack"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("labstack")}
        graph[module_name(path)] = found
    return {name: {m for m in targets if m in graph and m != name} for name, targets in graph.items()}


def test_there_is_no_import_cycle():
    graph = imports()
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, name, target]))
            if not state.get(target):
                visit(target, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name, [])


def test_the_core_imports_no_verb():
    graph = imports()
    assert set(graph) >= CORE
    for name in CORE:
        assert graph[name] <= CORE, f"{name} imports {sorted(graph[name] - CORE)}: the core builds on nothing else"


def test_the_in_image_path_is_written_once_in_python():
    path = "/opt/labstack/" + "payload"  # not written out here either
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), ROOT / "tasks.py"]
    writers = [p.relative_to(ROOT) for p in sources if path in p.read_text()]
    assert [str(p) for p in writers] == ["labstack/payload.py"]
