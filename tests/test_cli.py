"""The zodi command line: every subcommand has --help and --json; examples configs load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zodi_cli import build_parser, main
from zodi_core.config import PipelineConfig

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {
    "synth",
    "ingest",
    "transfer",
    "preview",
    "tiny-models",
    "train",
    "evaluate",
    "demo",
    "pipeline",
}


def _subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_cli_has_every_subcommand():
    assert EXPECTED <= set(_subcommands())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_subcommand_help_and_json_flag(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"zodi {name}" in out and "--json" in out


def test_cli_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["pipeline", "--config", str(tmp_path / "missing.yaml"), "--json"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "missing.yaml" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["ok"] is False


def test_cli_console_script_runs():
    exe = Path(sys.executable).parent / "zodi"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "synth" in proc.stdout


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    cfg = PipelineConfig.from_yaml(path)
    assert cfg.domains and cfg.targets
    assert cfg.transfer.num_inference_steps == 20


def test_install_script_is_a_no_op_once_installed():
    """`make test` / `make demo` run scripts/install.sh every time: with the stamp of the current
    inputs present it must install nothing (seconds, not minutes)."""
    venv = Path(sys.executable).parent.parent
    if not any(venv.glob(".zodi-installed-*")):
        pytest.fail(f"{venv} has no install stamp: create it with `make install`")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VENV": str(venv)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "[install]" not in proc.stdout + proc.stderr
