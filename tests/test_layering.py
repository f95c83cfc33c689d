"""The package's layering: Prefect only under vasrch.orchestration, and no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import vasrch

PACKAGE = Path(vasrch.__file__).parent
ORCHESTRATION = "vasrch.orchestration"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an `import` statement in the file names, wherever the statement sits."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_prefect_is_imported_only_under_orchestration():
    outside = {
        name: sorted(
            n for n in imported_names(path) if n.split(".")[0] in {"prefect", "prefect_dask"}
        )
        for name, path in modules().items()
        if not name.startswith(ORCHESTRATION)
    }
    assert {name: found for name, found in outside.items() if found} == {}


def test_every_module_outside_orchestration_imports_with_prefect_unimportable():
    names = sorted(n for n in modules() if not n.startswith(ORCHESTRATION))
    code = f"""
import importlib, sys

class RefusePrefect:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prefect", "prefect_dask"):
            raise ImportError(f"{{name}} is made unimportable by this test")
        return None

sys.meta_path.insert(0, RefusePrefect())
for name in {names!r}:
    importlib.import_module(name)
assert "prefect" not in sys.modules
print("imported", len({names!r}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"imported {len(names)}" in done.stdout


def test_the_refusal_really_blocks_prefect():
    """The guard above must fail for a module that does import Prefect."""
    code = """
import importlib, sys

class RefusePrefect:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prefect", "prefect_dask"):
            raise ImportError(name)
        return None

sys.meta_path.insert(0, RefusePrefect())
importlib.import_module("vasrch.orchestration.flows.train")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "ImportError" in done.stderr


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for imported in imported_names(path):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "vasrch":
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_package_imports_form_no_cycle():
    assert find_cycle(import_graph()) is None


def test_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["vasrch.layout"] = graph["vasrch.layout"] | {"vasrch.workspace.runs"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]


# The stages in data-flow order; a stage imports only itself, the stages before it and the
# shared top-level modules. `vasrch.api` and `vasrch/__init__` are the public face over all.
STAGES = [
    "catalog",
    "features",
    "index",
    "workspace",
    "search",
    "bulk",
    "duplicates",
    "pages",
    "service",
    "query_jobs",
    "orchestration",
    "cli",
]
PUBLIC_FACE = {"vasrch", "vasrch.api"}


def stage_of(module: str) -> int | None:
    """The module's position in STAGES, or None for a shared top-level module."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else None


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for name, targets in graph.items():
        if name in PUBLIC_FACE:
            continue
        here = stage_of(name)
        for target in targets:
            there = stage_of(target)
            if there is not None and (here is None or there > here):
                found.append(f"{name} -> {target}")
    return sorted(found)


def test_every_top_level_module_is_a_stage_or_shared():
    top = {name.split(".")[1] for name in modules() if name != "vasrch"}
    shared = {"addresses", "api", "atomic_files", "config", "errors", "hashing", "layout"}
    shared |= {"progress", "quiet"}
    assert top - set(STAGES) <= shared, sorted(top - set(STAGES) - shared)


def test_stages_import_only_earlier_stages():
    assert stage_violations(import_graph()) == []


def test_stage_check_finds_a_planted_backward_import():
    graph = import_graph()
    graph["vasrch.catalog.scan"] = graph["vasrch.catalog.scan"] | {"vasrch.search.searcher"}
    assert stage_violations(graph) == ["vasrch.catalog.scan -> vasrch.search.searcher"]
