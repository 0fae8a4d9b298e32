"""The import graph of src/gpufleet: no circles, and no import from a lower layer into a higher one (issue 22).

Every import counts, at module level, inside functions and under TYPE_CHECKING alike: the AST is walked, nothing
is imported. A module imports "a.b" when it names a.b or something defined in it (`from a.b import X`).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.repo_paths import REPO

SRC = REPO / "src" / "gpufleet"

# Packages where an import circle is tolerated while it is taken apart: none (the gateway's went with the request
# pipeline, issue 22: gateway/state.py holds the state, handlers import the edge, nothing imports a handler).
# Never add to it. (The planner's fit <-> fixes circle is gone: planner/types.py.)
ALLOWED_CIRCLE_PACKAGES: tuple[str, ...] = ()

# Layers, bottom up: a top-level package (or module) may import only from a lower layer and from itself.
LAYERS: dict[str, int] = {
    "redact": -1,
    "model_names": -1,  # leaf modules that errors (and everything) may use
    "gpufleet": 0,
    "errors": 0,
    "paths": 0,
    "child_process": 0,
    "tiers": 0,
    "model_packages": 1,
    "dialects": 1,
    "catalog": 1,
    "protocols": 1,
    "limits": 1,
    "config": 2,
    "planner": 2,
    "store": 2,
    "cluster": 3,
    "engines": 4,
    "doctor": 5,
    "engine_supervisor": 5,
    "router": 5,
    "metrics": 6,
    "gateway": 7,
    "bench": 7,
    "deploy": 7,
    "cli": 8,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the gpufleet modules it imports."""
    modules = _modules()

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(owner(alias.name) for alias in node.names if alias.name.startswith("gpufleet"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                if base.startswith("gpufleet"):
                    edges.update(
                        f"{base}.{a.name}" if f"{base}.{a.name}" in modules else owner(base) for a in node.names
                    )
        graph[name] = edges - {name, ""}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def _short(name: str) -> str:
    return name.removeprefix("gpufleet.")


def test_the_finder_sees_a_circle_through_a_function_level_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_beyond_the_ones_being_taken_apart() -> None:
    found = [{_short(m) for m in circle} for circle in circles(import_graph())]
    unexpected = [
        sorted(c)
        for c in found
        if not any(all(m.startswith(f"{package}.") for m in c) for package in ALLOWED_CIRCLE_PACKAGES)
    ]
    assert unexpected == [], f"import circles: {unexpected}"


def test_no_layer_imports_a_higher_one() -> None:
    def layer_of(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    graph = import_graph()
    unknown = sorted({layer_of(m) for m in graph} - set(LAYERS))
    assert unknown == [], f"put these packages in LAYERS: {unknown}"
    upward = sorted(
        f"{_short(m)} -> {_short(t)}"
        for m, targets in graph.items()
        for t in targets
        if layer_of(m) != layer_of(t) and LAYERS[layer_of(t)] >= LAYERS[layer_of(m)]
    )
    assert upward == [], f"imports into the same or a higher layer: {upward}"


def test_tests_import_helpers_from_named_modules_never_from_conftest() -> None:
    """tests/conftest.py holds fixtures only; helpers live in tests/gateway_harness.py, served_gateway.py,
    real_engines.py, repo_paths.py and standin_kit.py (a module named for what it is, not a grab-bag)."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name == "conftest" or name.endswith(".conftest") for name in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"import the helper from its own module instead: {offenders}"
