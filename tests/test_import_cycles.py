"""No import circle among the project's modules (issue 20), counting every import statement:
module level, inside functions and under ``if TYPE_CHECKING:`` alike, so that none can hide."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("zodi_core", "zodi_cli", "tasks", "flows", "deployments")


def _module_name(path: str) -> str:
    name = path[: -len(".py")].replace("/", ".")
    return name.removesuffix(".__init__")


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, from ``{path: source}`` (relative imports too)."""
    modules = {_module_name(p): p for p in sources}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(sources[path], path)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_project_has_no_import_cycle():
    paths = subprocess.check_output(["git", "ls-files", *PACKAGES], cwd=REPO, text=True).split()
    sources = {
        p: (REPO / p).read_text()
        for p in paths
        if p.endswith(".py") and "/configs/" not in p and (REPO / p).exists()
    }
    assert len(sources) > 50
    assert cycles(import_graph(sources)) == []


def test_cycle_check_sees_imports_hidden_in_functions_and_type_checking():
    sources = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg.b import g\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n",
        "pkg/c.py": "from .a import f\n",
        "pkg/d.py": "import pkg.a\n",
    }
    assert cycles(import_graph(sources)) == [["pkg.a", "pkg.b", "pkg.c"]]
