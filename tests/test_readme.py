"""The README's command-line walkthrough runs top to bottom as written, on its own synthetic data.

The commands are read from README.md itself (the fenced ``bash`` blocks of "The command line":
the walkthrough from ``zodi synth`` to ``zodi demo``, then the custom-domain ``dusk`` block) and
run in order with the venv's ``zodi``, in a fresh folder that stands for the repository root
(``examples/synthetic.yaml`` is copied there). Like a shell, a line ``NAME=value`` sets a
variable that later lines use as ``$NAME``; nothing else is substituted.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ZODI = Path(sys.executable).parent / "zodi"
ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def bash_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def shell_lines(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def walkthrough_commands() -> list[list[str]]:
    """The walkthrough block (it starts with ``zodi synth --out data``) and the ``dusk`` block."""
    blocks = [shell_lines(b) for b in bash_blocks(readme_section("The command line"))]
    walk = next(b for b in blocks if b and b[0][:3] == ["zodi", "synth", "--out"])
    dusk = next(b for b in blocks if any("dusk" in w for cmd in b for w in cmd))
    return walk + dusk


def expand(words: list[str], variables: dict[str, str]) -> list[str]:
    return [re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], w) for w in words]


def test_readme_walkthrough_is_parsed_as_the_reader_sees_it():
    commands = walkthrough_commands()
    programs = [c[1] for c in commands if c[0] == "zodi"]
    assert programs[0] == "synth" and programs[-1] == "preview"
    for name in ("ingest", "transfer", "train", "evaluate", "predict", "gc", "pipeline", "demo"):
        assert name in programs, name
    # Only zodi commands and shell variable assignments: nothing for the reader to fill in.
    for cmd in commands:
        assert cmd[0] == "zodi" or (len(cmd) == 1 and ASSIGNMENT.fullmatch(cmd[0])), cmd
    assert not [w for cmd in commands for w in cmd if re.search(r"IMG\.png|LABEL_|<\w+>", w)]
    pipeline = next(c for c in commands if c[:2] == ["zodi", "pipeline"])
    assert pipeline[2:] == ["--config", "examples/synthetic.yaml"]


@pytest.mark.slow
def test_readme_walkthrough_runs_top_to_bottom(tmp_path):
    """Every command exits 0; the files the README names exist afterwards."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    # What the walkthrough reads from the repository root: the committed pocket models.
    (tmp_path / "zodi_core" / "pocket").mkdir(parents=True)
    (tmp_path / "zodi_core" / "pocket" / "weights").symlink_to(REPO / "zodi_core/pocket/weights")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    variables: dict[str, str] = {}
    timings = []
    for words in walkthrough_commands():
        if words[0] != "zodi":
            name, value = ASSIGNMENT.fullmatch(words[0]).groups()
            variables[name] = value
            continue
        argv = [str(ZODI), *expand(words[1:], variables)]
        start = time.monotonic()
        proc = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        timings.append((" ".join(words[:2]), round(time.monotonic() - start, 1)))
        assert proc.returncode == 0, (
            f"README command failed (exit {proc.returncode}): {shlex.join(words)}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        if words[1] in ("pipeline", "demo"):
            # One line per stage event (the transfer's with its image counts), no Prefect logs;
            # training's iteration line goes to stderr.
            for stage in ("[ingest] 3/3 datasets", "[transfer] night: shards: ", "images: 8 written",
                          "[proxy] night: shards: ", "[train] zodi-night seed 0: Completed",
                          "[evaluate] zodi-night"):  # fmt: skip
                assert stage in proc.stdout, (stage, proc.stdout)
            assert re.search(r"iter (\d+)/\1  loss ", proc.stderr), proc.stderr
            assert "| INFO" not in proc.stdout + proc.stderr
    print(timings)
    for path in (
        "manifests/gta5.parquet",
        "out/paired/domain=night/paired.parquet",
        "out/paired/domain=dusk/paired.parquet",
        "work/iter_20.pth",
        "sheet.png",
        "dusk-sheet.png",
        "pipeline-out/report.md",
        "zodi-demo/report.md",
    ):
        assert (tmp_path / path).exists(), path
