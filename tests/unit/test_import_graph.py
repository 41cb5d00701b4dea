"""No import cycles in app/, components/ and backend/; no way around JobService.

The graph is built from the source with `ast`, not by importing: every import counts, at module
level, inside functions and under `if TYPE_CHECKING:`, because each of them is a dependency one
module has on another and a cycle among them means the two cannot be understood (or moved) apart.

The studio, the CLI and the HTTP face read and write jobs only through `JobService`
(backend/jobs/service.py), which holds the one owner check: none of them touches the job store,
the event log or the event bus itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "components", "backend")
#: Folders whose modules go through JobService for every read and write of jobs.
SERVICE_USERS = ("app", "components", "backend/api")
#: What they must not reach: System's attributes and the classes behind JobService.
STORE_ATTRIBUTES = frozenset({"store", "event_log", "bus"})
STORE_CLASSES = frozenset({"JobStore", "EventLog", "EventBus"})


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `name` (at `path`) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from a import b` imports the module a.b when there is one, else a name from a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where only a.b is ours
                target = target.rpartition(".")[0]
            # Importing a.b.c runs a/__init__ and a/b/__init__ first: those count too, but for the
            # packages `name` itself lives in (already being imported when `name` runs).
            while target and target != name and not name.startswith(target + "."):
                found.add(target)
                target = target.rpartition(".")[0]
    return found


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [cycle_in(graph, group) for group in groups]


def cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, within the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & group):
                if succ == start:
                    return paths[node] + [start]
                if succ not in paths:
                    paths[succ] = paths[node] + [succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_cycle_finder_sees_every_kind_of_import(tmp_path):
    """The finder itself: relative, absolute, `from . import`, function-level and TYPE_CHECKING imports,
    and a package's __init__ run by importing one of its modules from outside."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from . import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.sub.c import thing\n")
    (tmp_path / "pkg" / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n")
    (tmp_path / "pkg" / "d.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    (tmp_path / "pkg" / "sub" / "c.py").write_text("import os\n")
    assert find_cycles(import_graph(tmp_path, ("pkg",))) == []
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("from .c import thing\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert graph["pkg.sub.c"] == set()  # its own package's __init__ is already running: not an edge
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("from pkg import d\n")
    assert find_cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.d", "pkg.a"]]


def bypasses(source: str, filename: str = "<source>") -> list[str]:
    """Where `source` reaches the job store, the event log or the bus other than through JobService:
    `<anything>.store`/`.event_log`/`.bus`, or the classes themselves (imported or named); in source order."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and node.attr in STORE_ATTRIBUTES:
            found.append((node.lineno, node.col_offset, f".{node.attr}"))
        elif isinstance(node, ast.Name) and node.id in STORE_CLASSES:
            found.append((node.lineno, node.col_offset, node.id))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            found += [
                (node.lineno, node.col_offset, f"import {alias.name}") for alias in node.names if alias.name in STORE_CLASSES
            ]
    return [f"{filename}:{line}: {what}" for line, _, what in sorted(found)]


def test_studio_cli_and_api_go_through_the_job_service():
    found = []
    for folder in SERVICE_USERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += bypasses(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "around JobService:\n" + "\n".join(found)


def test_bypass_finder_sees_attributes_names_and_imports():
    source = (
        "from backend.store.jobs import JobRecord, JobStore\n"
        "from backend.store.models import JobStatus\n"
        "def read(system, self):\n"
        "    system.store.get('x')\n"
        "    self.system.event_log.after('x', 0, 10)\n"
        "    JobStore(system.engine)\n"
        "    return system.jobs.get('x'), system.bus\n"
    )
    assert [where.partition(": ")[2] for where in bypasses(source)] == [
        "import JobStore",
        ".store",
        ".event_log",
        "JobStore",
        ".bus",
    ]
    assert bypasses("from backend.store.models import JobStatus\nsystem.jobs.list(user)\n") == []
