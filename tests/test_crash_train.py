"""Training resumes or says why not (issue 22): the same ``zodi train`` command resumes a work dir
whose checkpoints have its settings (after a real kill -9), refuses one of other settings, the
pipeline gives each settings its own folder, and checkpoints are written atomically (a full disk
leaves no truncated one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)
from test_crash_disk import full_disk_command

from zodi_core.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("crash_train_data"), n=4)


def _zodi(*args: str) -> list[str]:
    return [sys.executable, "-m", "zodi_cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train_cmd(data, work: Path, max_iters: int, *extra: str) -> list[str]:
    return _zodi(
        "train", "--config", DEMO, "--paired-manifest", data["paired"], "--work-dir", str(work),
        "--max-iters", str(max_iters), "--device", "cpu", *extra,
    )  # fmt: skip


# --- the rule, as a pure function -----------------------------------------------------------


def test_decide_resume_resumes_same_settings_and_refuses_others(tmp_path):
    from zodi_core.seg.resume import decide_resume

    last = tmp_path / "iter_4.pth"
    ours = {"train_cfg.max_iters": 40, "seed": 0}
    other = {"train_cfg.max_iters": 50, "seed": 0}
    assert decide_resume("auto", last, ours, ours, "w") is True
    assert decide_resume("auto", None, None, ours, "w") is False  # nothing to resume: start
    with pytest.raises(ConfigError, match=r"train_cfg\.max_iters 40 → 50"):
        decide_resume("auto", last, ours, other, "w")
    with pytest.raises(ConfigError, match="no record of the settings"):
        decide_resume("auto", last, None, ours, "w")
    assert decide_resume(True, last, ours, other, "w") is True  # --resume: the user's call
    assert decide_resume(False, last, ours, ours, "w") is False  # --no-resume: start over
    with pytest.raises(FileNotFoundError, match="last_checkpoint"):
        decide_resume(True, None, None, ours, "w")


def test_pipeline_training_folder_depends_on_the_settings(tmp_path):
    """A model trained with max_iters 40 is never resumed by a run with max_iters 50: their
    work dirs differ; the same settings find the same folder (and resume it after a crash)."""
    from tasks.train import training_work_dir
    from zodi_core.config import TrainConfig
    from zodi_core.runs import TrainingRun

    source = tmp_path / "samples.parquet"
    source.write_bytes(b"samples v1")
    run = TrainingRun("source-only", None, DEMO, 0, None)
    forty = TrainConfig.preset("demo", max_iters=40)
    dir40 = training_work_dir(run, str(source), "/root", forty)
    assert dir40.startswith("/root/train/source-only/seed0/")
    assert training_work_dir(run, str(source), "/root", forty) == dir40
    assert training_work_dir(run, str(source), "/root", forty.replace(max_iters=50)) != dir40
    # the seed list planned beside the run is not its setting (its own seed is in the path)
    assert training_work_dir(run, str(source), "/root", forty.replace(seeds=(0, 1, 2))) == dir40
    source.write_bytes(b"samples v2")  # same URI, new data
    assert training_work_dir(run, str(source), "/root", forty) != dir40


# --- real processes ---------------------------------------------------------------------------


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} not written within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_zodi_train_killed_then_the_same_command_resumes(data, tmp_path):
    work = tmp_path / "work"
    cmd = _train_cmd(data, work, 100)  # a checkpoint every 10 iterations
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        _wait_for(work / "iter_10.pth", proc, timeout=300)
        _wait_for(work / "last_checkpoint", proc, timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9, mid-training
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    resumed_from = int(Path((work / "last_checkpoint").read_text().strip()).stem.split("_")[1])
    for ckpt in work.glob("iter_*.pth"):  # every published checkpoint is whole (atomic writes)
        from zodi_core.seg.checkpoint import load_checkpoint_file

        assert load_checkpoint_file(str(ckpt))["meta"]["iter"] == int(ckpt.stem.split("_")[1])

    again = subprocess.run(cmd + ["--json"], cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"zodi train: resuming {work} from iteration {resumed_from} (iter_{resumed_from}.pth)"
        in again.stderr
    )
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == resumed_from and summary["iterations"] == 100
    assert summary["checkpoint"] == str(work / "iter_100.pth")


def test_zodi_train_refuses_checkpoints_of_other_settings(data, tmp_path, capsys):
    from zodi_cli import main

    work = tmp_path / "work"
    args = _train_cmd(data, work, 2)[3:]  # zodi train ... (in this process: no start-up cost)
    assert main(args) == 0
    capsys.readouterr()
    assert main(_train_cmd(data, work, 3)[3:]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"zodi train: error: work dir {work}: holds iter_2.pth trained with")
    assert "train_cfg.max_iters 2 → 3" in last and "--resume" in last
    assert not (work / "iter_3.pth").exists()
    assert main(args) == 0  # the same settings again: already trained, nothing to do
    assert "trained: already trained" in capsys.readouterr().out


@pytest.mark.slow
def test_full_disk_during_training_exits_1_naming_the_file_and_leaves_no_truncated_checkpoint(
    data, tmp_path
):
    work = tmp_path / "work"
    # One whole checkpoint first: how much room one takes.
    ok = subprocess.run(_train_cmd(data, tmp_path / "probe", 1), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-3000:]
    size = (tmp_path / "probe" / "iter_1.pth").stat().st_size
    args = _train_cmd(data, work, 4)[3:]  # zodi train ... (after "python -m zodi_cli")
    listing = tmp_path / "listing.txt"  # what the work dir holds when the command has failed
    cmd, wording = full_disk_command(work, size // 2, args, listing)  # room for logs, not for one
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("zodi train: error: ") and wording in last, proc.stderr[-2000:]
    assert str(work / "iter_") in last  # names the checkpoint it could not write
    files = [Path(line).name for line in listing.read_text().splitlines()]
    assert files and not [f for f in files if f.endswith((".pth", ".part"))], files
