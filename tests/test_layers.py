"""Layering: zodi_core (the library) never imports Prefect, flows, tasks, deployments or zodi_cli.

Checked two ways: statically (every ``import``/``from`` statement and every ``import_module`` /
``__import__`` call with a literal name in zodi_core's source) and at run time (importing every
zodi_core module in a fresh interpreter leaves none of those packages in ``sys.modules``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("prefect", "prefect_aws", "flows", "tasks", "deployments", "zodi_cli")


def _forbidden(name: str) -> bool:
    return name.split(".")[0] in FORBIDDEN


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, "attr", None) or getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield node.lineno, arg.value


def _core_files() -> list[Path]:
    return sorted(
        p for p in (REPO / "zodi_core").rglob("*.py") if "seg/configs" not in p.as_posix()
    )


def test_zodi_core_source_imports_no_upper_layer():
    found = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in _core_files()
        for line, name in _imports(ast.parse(path.read_text(), str(path)))
        if _forbidden(name)
    ]
    assert found == [], "zodi_core imports an upper layer:\n" + "\n".join(found)


def test_layer_check_catches_a_forbidden_import():
    """The static check itself: a planted static and dynamic import are both found."""
    code = "import prefect\nfrom flows.pipeline import x\nimportlib.import_module('zodi_cli.seg')\n"
    names = [name for _, name in _imports(ast.parse(code)) if _forbidden(name)]
    assert names == ["prefect", "flows.pipeline", "zodi_cli.seg"]


@pytest.mark.slow
def test_importing_every_zodi_core_module_loads_no_upper_layer():
    script = (
        "import importlib, pkgutil, sys, zodi_core\n"
        "for m in pkgutil.walk_packages(zodi_core.__path__, 'zodi_core.'):\n"
        "    if '.seg.configs' not in m.name:\n"
        "        importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
