"""The README's command-line walkthrough runs top to bottom as written, on its own synthetic data.

The commands are read from README.md itself (the fenced ``bash`` blocks of "The command line":
the walkthrough from ``zodi synth`` to ``zodi demo``, then the custom-domain ``dusk`` block) and
run in order with the venv's ``zodi``, in a fresh folder that stands for the repository root
(``examples/synthetic.yaml`` is copied there). Like a shell, a line ``NAME=value`` sets a
variable that later lines use as ``$NAME``; nothing else is substituted.

Each command runs in a process of its own, as ``zodi ARGS`` (``zodi_cli.main`` under
``sys.exit``, the console script's two lines), forked from one server process that imported
torch, diffusers and transformers once: each model command would otherwise spend 5-7 s of CPU
on those imports alone (about half of the walkthrough's time on the 2-core CPU machine). zodi's
own modules, Prefect and mmseg are imported afresh by every command; the first command runs
through the installed ``zodi`` script itself.
"""

from __future__ import annotations

import json
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

#: The fork server: one JSON job a line on stdin ({"argv", "cwd", "stdout", "stderr"}); each job
#: runs ``sys.exit(zodi_cli.main(argv))`` in a forked child with its output in the two files, and
#: the child's exit code comes back as one JSON line. The folder's ``zodi_core/pocket/weights`` must
#: not shadow the installed package as a namespace package, so cwd is not on ``sys.path``.
FORK_SERVER = """
import json, os, sys
sys.path[0] = os.path.dirname(sys.executable)  # as the console script's, not -c's cwd ("")
import torch, diffusers, transformers, transformers.modeling_utils  # noqa: F401 - once
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        for fd, path in ((0, os.devnull), (1, job["stdout"]), (2, job["stderr"])):
            os.dup2(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["zodi", *job["argv"]]
        from zodi_cli import main
        sys.exit(main(job["argv"]))
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class ForkServer:
    """``zodi`` commands as processes forked from :data:`FORK_SERVER` (stopped by ``close``)."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.cwd, self.logs = cwd, logs
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER], cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.n = 0

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        self.n += 1
        out, err = self.logs / f"{self.n}.out", self.logs / f"{self.n}.err"
        job = {"argv": args, "cwd": str(self.cwd), "stdout": str(out), "stderr": str(err)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, f"the fork server ended (exit {self.proc.wait()}) running zodi {args}"
        code = json.loads(reply)["returncode"]
        return subprocess.CompletedProcess(["zodi", *args], code, out.read_text(), err.read_text())

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)  # the server and any command it left running
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


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
def test_readme_walkthrough_runs_top_to_bottom(tmp_path, tmp_path_factory):
    """Every command exits 0; the files the README names exist afterwards."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    # What the walkthrough reads from the repository root: the committed pocket models.
    (tmp_path / "zodi_core" / "pocket").mkdir(parents=True)
    (tmp_path / "zodi_core" / "pocket" / "weights").symlink_to(REPO / "zodi_core/pocket/weights")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    variables: dict[str, str] = {}
    timings = []
    server = ForkServer(tmp_path, env, tmp_path_factory.mktemp("zodi-output"))
    try:
        for words in walkthrough_commands():
            if words[0] != "zodi":
                name, value = ASSIGNMENT.fullmatch(words[0]).groups()
                variables[name] = value
                continue
            args = expand(words[1:], variables)
            start = time.monotonic()
            if not timings:  # the first command through the installed console script
                proc = subprocess.run(
                    [str(ZODI), *args], cwd=tmp_path, env=env, capture_output=True, text=True
                )  # fmt: skip
            else:
                proc = server.run(args)
            timings.append((" ".join(words[:2]), round(time.monotonic() - start, 1)))
            assert proc.returncode == 0, (
                f"README command failed (exit {proc.returncode}): {shlex.join(words)}\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n(seconds so far: {timings})"
            )
            if words[1] in ("pipeline", "demo"):
                # One line per stage event (the transfer's with its image counts), no Prefect
                # logs; training's iteration line goes to stderr.
                for stage in ("[ingest] 3/3 datasets", "[transfer] night: shards: ",
                              "images: 8 written", "[proxy] night: shards: ",
                              "[train] zodi-night seed 0: Completed", "[evaluate] zodi-night"):  # fmt: skip
                    assert stage in proc.stdout, (stage, proc.stdout)
                assert re.search(r"iter (\d+)/\1  loss ", proc.stderr), proc.stderr
                assert "| INFO" not in proc.stdout + proc.stderr
    finally:
        server.close()
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
