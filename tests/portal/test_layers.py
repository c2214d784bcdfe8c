"""Imports point down the layers and never go round in a circle."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def _root_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["root_packages"]


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Return the strongly connected groups of modules that import each other, in a circle."""
    modules = sorted(m for m in graph.modules if ".migrations" not in m)
    edges = {m: sorted(
        target for target in graph.find_modules_directly_imported_by(m)
        # A module importing its own package (`from hosts.virt import X` in hosts.virt.a) is
        # not a circle of modules.
        if target in graph.modules and ".migrations" not in target
        and not m.startswith(target + ".")
    ) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in modules:  # Tarjan's algorithm, iterative
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges[target])))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def test_no_module_of_the_project_imports_itself_in_a_circle():
    # Imports under TYPE_CHECKING count here: a circle of them is still a circle to read.
    graph = grimp.build_graph(*_root_packages(), cache_dir=None)
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_circle(tmp_path, monkeypatch):
    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circle import b\n")
    (package / "b.py").write_text("from circle import c\n")
    (package / "c.py").write_text("import circle.a\n")
    (package / "d.py").write_text("from circle import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("circle", cache_dir=None)
    assert import_cycles(graph) == [["circle.a", "circle.b", "circle.c"]]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
