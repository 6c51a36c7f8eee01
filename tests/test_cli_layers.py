"""The command line is the top floor: no lower layer (zodi_core, flows, tasks, deployments) imports
zodi_cli, statically or by name; and building ``zodi``'s parser (``zodi --help``) loads none of the
heavy libraries the commands import when they run (it stays fast)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from test_layers import _imports

from zodi_cli import main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "mmseg", "mmengine", "prefect", "pyarrow", "flows")


def test_no_lower_layer_imports_the_command_line():
    found = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for package in ("zodi_core", "flows", "tasks", "deployments")
        for path in sorted((REPO / package).rglob("*.py"))
        for line, name in _imports(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] == "zodi_cli"
    ]
    assert found == [], "a lower layer imports the command line:\n" + "\n".join(found)


def test_building_the_parser_loads_no_heavy_library():
    script = (
        "import sys, zodi_cli\n"
        "zodi_cli.build_parser()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_counts_and_the_strength_are_usage_errors_naming_the_flag(capsys):
    """Declared once as argparse types (_common.count, transfer.strength): exit 2, one line."""
    cases = [
        (["train", "--config", "c.py", "--work-dir", "w", "--gpus", "0"], "--gpus"),
        (["tune-strength", "--manifest", "m", "--domain", "night", "--out", "o", "--n", "0"],
         "--n"),
        (["score", "--manifest", "m", "--batch-size", "0"], "--batch-size"),
        (["preview", "--image", "i", "--label", "l", "--domain", "night", "--out", "o",
          "--steps", "-2"], "--steps"),
    ]  # fmt: skip
    for argv, flag in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        value = argv[-1]
        assert f"argument {flag}: expected an integer >= 1, received {value}" in err, err
    assert main(["transfer", "--manifest", "m", "--domain", "night", "--out", "o",
                 "--strength", "0"]) == 2  # fmt: skip
    assert "argument --strength: expected a value in (0, 1], received 0" in capsys.readouterr().err
