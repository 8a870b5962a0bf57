"""The library's import graph: no cycles, no orchestration inside it, layers that point one way.

Read from the source with ``ast`` (every import, also those inside functions), so a
cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "crossfuse"

# Sub-packages in dependency order: each may import those before it, never those after.
LAYERS = ["encoders", "fusion", "data", "features", "training", "registry", "evaluation",
          "monitoring", "batch", "bench"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in LIBRARY.rglob("*.py")}


def imported_names(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at any depth of its code."""
    names = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """``{module: {crossfuse modules it imports}}`` (``from a import b`` counts b if b is a module)."""
    modules = all_modules()
    return {name: {n for n in imported_names(path) if n in modules and n != name}
                for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None for an acyclic graph.

    >>> find_cycle({"a": {"b"}, "b": {"a"}})
    ['a', 'b', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_library_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_library_never_imports_orchestration():
    offenders = {module_name(p): sorted(n for n in imported_names(p)
                                         if n.split(".")[0] in {"pipelines", "components", "kfp"})
                 for p in LIBRARY.rglob("*.py")}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_sub_packages_import_only_earlier_layers():
    wrong = []
    for module, targets in import_graph().items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] not in LAYERS:
            continue
        for target in targets:
            tparts = target.split(".")
            if len(tparts) >= 2 and tparts[1] in LAYERS and \
                    LAYERS.index(tparts[1]) > LAYERS.index(parts[1]):
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "a lower layer imports a higher one:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),
])
def test_find_cycle_sees_long_cycles_and_diamonds(graph, expected):
    assert find_cycle(graph) == expected
