"""finch's imports point one way (docs/reference.md "Layout"), and its modules stay small. Read from the
source, so a new import that points back up a layer, or closes a cycle, fails here rather than in
a reader's head."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import finch

ROOT = Path(finch.__file__).parent
EXTERNAL = ("torch", "httpx2", "starlette", "uvicorn")
# What each layer must never import.
FORBIDDEN = {
    "models": {"server", "store", "upstream", "learning", "dialects", "policy", "httpx2", "starlette"},
    "policy": {"torch", "models", "learning", "server", "store", "dialects", "upstream"},
    "dialects": {"torch", "models", "learning", "server", "store", "upstream"},
    "store": {"torch", "models", "learning", "server", "upstream"},
    "learning": {"server", "upstream", "dialects", "starlette"},
    "upstream": {"torch", "models", "learning", "server", "store", "policy"},
}


def _unit(path: Path) -> str:
    """A package under finch/, or a top-level module's name."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        unit = _unit(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                names = [f"{base}.{alias.name}" for alias in node.names] if base == "finch" else [base]
            else:
                continue
            for name in names:
                head, _, rest = name.partition(".")
                target = rest.split(".")[0] if head == "finch" else head
                if (head == "finch" or head in EXTERNAL) and target and target != unit:
                    edges[unit].add(target)
    return edges


def test_no_layer_imports_what_it_must_not():
    graph = import_graph()
    wrong = {unit: sorted(graph[unit] & banned) for unit, banned in FORBIDDEN.items() if graph[unit] & banned}
    assert not wrong, wrong


def test_the_packages_import_each_other_without_a_cycle():
    graph = import_graph()
    units = {u for u in graph if (ROOT / u).is_dir()}
    done: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in path, " -> ".join((*path, unit))
        if unit in done:
            return
        for target in graph.get(unit, ()):
            if target in units:
                visit(target, (*path, unit))
        done.add(unit)

    for unit in sorted(units):
        visit(unit, ())


def test_the_graph_sees_imports_of_every_form():
    graph = import_graph()
    assert "dialects" in graph["store"]  # `from finch import dialects`
    assert "torch" in graph["models"] and "policy" in graph["learning"]


def test_no_module_is_over_300_lines():
    """A module that outgrows 300 lines is doing two jobs (STYLE.md "Small files")."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    assert sizes and {name: n for name, n in sizes.items() if n > 300} == {}
