"""A crash never blocks or fools the next run (issue 22), with real processes: ``zodi pipeline``
killed with SIGKILL mid-transfer and mid-training, then the same command completes (no hand step,
no hang: every wait has a timeout); Ctrl-C (SIGINT) stops a run at the first press, releasing
its locks and its ephemeral server, in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pipeline(synthetic_root, tiny_models_dir, tmp_path):
    """``zodi pipeline`` on the demo set-up (tiny models), ephemeral Prefect in its own home."""
    import yaml

    from zodi_cli._common import demo_config

    data = {n: str(synthetic_root / n) for n in ("cityscapes", "acdc", "gta5")}
    cfg = demo_config(tmp_path, data, tiny_models_dir, ["night"])
    cfg = cfg.replace(train=cfg.train.replace(max_iters=20))  # a checkpoint every 2 iterations
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "OMP_NUM_THREADS": "1"}
    for name in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL", "ZODI_LOCKS_DIR"):
        env.pop(name, None)
    started: list[subprocess.Popen] = []

    class Pipeline:
        locks = tmp_path / "prefect" / "locks"
        root = Path(cfg.storage.root)

        def start(self, **extra_env: str) -> subprocess.Popen:
            proc = subprocess.Popen(
                [sys.executable, "-m", "zodi_cli", "pipeline", "--config", str(config)],
                cwd=REPO, env={**env, **extra_env}, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
                start_new_session=True,  # its own process group: the test cleans up what it left
            )  # fmt: skip
            started.append(proc)
            return proc

        def wait_for_lock(self, proc: subprocess.Popen, prefix: str, timeout: float = 600):
            """Wait until ``proc`` holds a cache lock of a ``prefix`` task (transfer-, train-)."""
            deadline = time.monotonic() + timeout
            while True:
                for lock in self.locks.glob(f"{prefix}*.lock"):
                    try:
                        if json.loads(lock.read_text()).get("pid") == proc.pid:
                            return lock
                    except (ValueError, FileNotFoundError):
                        continue  # being written or released
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                assert time.monotonic() < deadline, f"no {prefix} lock within {timeout} s"
                time.sleep(0.2)

    yield Pipeline()
    for proc in started:  # the ephemeral server of a killed run, if any is left
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_ends(pgid: int, timeout: float = 15) -> bool:
    """Whether every process of the group (the run and the ephemeral server it started) ends."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _group_alive(pgid)


def test_pipeline_killed_mid_transfer_and_mid_training_then_rerun_completes(pipeline):
    # 1. kill -9 while a transfer shard holds its lock: the lock file stays behind
    first = pipeline.start()
    lock = pipeline.wait_for_lock(first, "transfer-")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert lock.exists()
    assert _group_ends(first.pid), "the killed run's ephemeral server was left behind"
    # 2. the same command: breaks the dead lock, finishes the transfer; kill -9 mid-training
    second = pipeline.start()
    lock = pipeline.wait_for_lock(second, "train-")
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)
    assert lock.exists()
    checkpoints = list((pipeline.root / "train").rglob("iter_*.pth"))
    # 3. the same command completes: no hand step, no hang
    third = pipeline.start()
    out, err = third.communicate(timeout=900)
    assert third.returncode == 0, err[-3000:]
    assert "[pipeline] done: report" in out
    broken = [line for line in err.splitlines() if line.startswith("[lock] ")]
    assert broken and all("is gone; lock broken" in line for line in broken), err[-3000:]
    assert f"process {second.pid} on" in "\n".join(broken)  # the training lock of run 2
    if checkpoints:  # run 2 had saved a checkpoint: run 3 resumed it, not started over
        assert "zodi train: resuming " in err
    assert not list(pipeline.locks.glob("*.lock"))


def test_ctrl_c_stops_the_pipeline_at_the_first_press(pipeline, prefect_harness):
    """One press: exit 130 within seconds, one line, no lock left, no process left, and (with a
    server, PREFECT_API_URL) the run is Crashed there, not Running for good."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL

    proc = pipeline.start(PREFECT_API_URL=PREFECT_API_URL.value())
    pipeline.wait_for_lock(proc, "transfer-")
    proc.send_signal(signal.SIGINT)  # one press
    start = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 30, "the first Ctrl-C did not stop the run"
    assert proc.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("zodi pipeline: interrupted (Ctrl-C): run stopped, ")
    assert "cache lock(s) released" in last
    assert not list(pipeline.locks.glob("*.lock"))  # no lock left for the next run to break
    assert _group_ends(proc.pid), "a process of the interrupted run is still running"
    crashed = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED]))
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=crashed)
    messages = [r.state.message for r in runs if r.state]
    # the domain's transfer_flow (a subflow, running then) and the pipeline_flow around it
    assert messages.count("interrupted (Ctrl-C)") >= 2, messages
