"""The harness's layers, read off its source with ``ast``: nothing reaches up.

From the bottom: ``oracles`` (what a verdict is), the core modules, ``engine``, ``plans``
(calls several controls share), then the check rooms, one per control family, which
import the layers below and never each other. Module-level and function-level imports
count alike: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "harness"
CHECKS = "harness.checks"
#: Modules that must not reach ``harness.checks``, not even through another module.
BELOW_CHECKS = (
    "harness.plans",
    "harness.oracles",
    "harness.outcome",
    "harness.engine",
    "harness.run",
    "harness.lifecycle",
    "harness.calling",
    "harness.subject",
    "harness.reporting",
)
#: Private imports another module still makes, each to be removed by its owner: the entry
#: must go when the import does (a stale entry fails too).
PENDING_PRIVATE: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` needs ``target``; ``names`` are what ``from`` took from it."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(*tops: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in tops:
        base = ROOT / top
        paths = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in paths:
            found[_module_name(path)] = path
    return found


HARNESS = _modules(PACKAGE)


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _edges(name: str, path: Path, known: dict[str, Path]) -> Iterator[Edge]:
    """Every import in ``path`` (at any depth) of a module in ``known``.

    ``from a import b`` is an import of module ``a.b`` when that module exists, else of
    ``a`` (taking the name ``b`` from it). Relative imports are resolved.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield Edge(name, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            taken: list[str] = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield Edge(name, sub, (), node.lineno)
                else:
                    taken.append(alias.name)
            if taken and base in known:
                yield Edge(name, base, tuple(taken), node.lineno)


def _graph() -> tuple[list[Edge], dict[str, set[str]]]:
    """All imports between harness modules, and the graph with each import's packages.

    Importing ``a.b.c`` runs ``a`` and ``a.b`` first: the graph has those edges too.
    """
    edges = [e for name, path in HARNESS.items() for e in _edges(name, path, HARNESS)]
    graph: dict[str, set[str]] = {name: set() for name in HARNESS}
    for e in edges:
        parts = e.target.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            if target in HARNESS and target != e.source:
                graph[e.source].add(target)
    return edges, graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_path_within(graph, set(c), c[0]) for c in components]


def _path_within(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside one component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return [start]


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` imports, directly or not, each with the module that imports it."""
    seen: dict[str, str] = {}
    frontier = [start]
    while frontier:
        v = frontier.pop()
        for w in sorted(graph[v]):
            if w not in seen and w != start:
                seen[w] = v
                frontier.append(w)
    return seen


def _chain(seen: dict[str, str], start: str, end: str) -> str:
    path = [end]
    while path[-1] != start:
        path.append(seen[path[-1]])
    return " -> ".join(reversed(path))


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_modules_are_found() -> None:
    """The parser sees the layers this file is about (a moved tree would make it vacuous)."""
    for name in (CHECKS, "harness.plans", "harness.plans.calls", "harness.oracles"):
        assert name in HARNESS, name
    assert _is_package(CHECKS, HARNESS)
    edges, _ = _graph()
    assert any(e.source == "harness.engine" and e.target == "harness.oracles" for e in edges)


def test_no_import_cycle() -> None:
    """(a) No cycle among harness modules (a package's ``__init__`` is a module of its own)."""
    _, graph = _graph()
    cycles = [" -> ".join(c) for c in _cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_finder_reports_the_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_check_rooms_do_not_import_each_other() -> None:
    """(b) A module under ``harness/checks/`` imports no other check module.

    Importing :mod:`harness.checks` itself (for ``check`` and ``warmup``) is the one way in.
    """
    edges, _ = _graph()
    wrong = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in edges
        if _in(e.source, CHECKS)
        and e.source != CHECKS
        and _in(e.target, CHECKS)
        and e.target not in (CHECKS, e.source)
    ]
    assert not wrong, "check modules importing check modules:\n" + "\n".join(wrong)


def test_lower_layers_never_reach_the_checks() -> None:
    """(c) plans, oracles, engine and run import nothing under ``harness.checks``, at any depth."""
    _, graph = _graph()
    wrong = []
    for start in sorted(n for n in HARNESS if any(_in(n, low) for low in BELOW_CHECKS)):
        seen = _reach(graph, start)
        wrong += [_chain(seen, start, t) for t in sorted(seen) if _in(t, CHECKS)]
    assert not wrong, "lower layers reaching the checks:\n" + "\n".join(wrong)


def _private_imports(modules: dict[str, Path]) -> set[tuple[str, str, str]]:
    found = set()
    for name, path in modules.items():
        for e in _edges(name, path, HARNESS):
            for taken in e.names:
                if taken.startswith("_") and not taken.startswith("__") and e.target != name:
                    found.add((name, e.target, taken))
    return found


def test_no_private_cross_module_import() -> None:
    """(d) Nothing takes a ``_private`` name from another harness module.

    The harness, the benchmarks, the suites and ``conftest.py`` are held to it. Our own
    tests may, where a judge can be reached no other way (prefer making it public).
    """
    modules = _modules(PACKAGE, "bench", "suites", "conftest.py")
    found = _private_imports(modules)
    wrong = sorted(found - PENDING_PRIVATE)
    assert not wrong, "private names imported across modules:\n" + "\n".join(
        f"{source} takes {name} from {target}" for source, target, name in wrong
    )
    stale = sorted(PENDING_PRIVATE - found)
    assert not stale, f"fixed, so remove from PENDING_PRIVATE: {stale}"
