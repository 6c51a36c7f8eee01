"""Every Prefect artifact goes through the one publisher (tasks/artifacts.py), which never fails
the work it shows: no other task or flow module creates one itself."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports_prefect_artifacts(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefect.artifacts"):
            return True
        if isinstance(node, ast.Import) and any(
            a.name.startswith("prefect.artifacts") for a in node.names
        ):
            return True
    return False


def test_only_the_publisher_imports_prefect_artifacts():
    modules = sorted([*(REPO / "tasks").glob("*.py"), *(REPO / "flows").glob("*.py")])
    assert REPO / "tasks" / "artifacts.py" in modules
    importers = [p.relative_to(REPO).as_posix() for p in modules if _imports_prefect_artifacts(p)]
    assert importers == ["tasks/artifacts.py"]
