"""Training in several processes: two runs of one model take turns in its work dir (issue 9),
and data-parallel training under torchrun on CPU with the gloo backend (``zodi train --gpus``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)

from zodi_cli import main
from zodi_core.seg.worklock import lock_path, work_dir_lock

DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"
ROOT = Path(__file__).resolve().parents[1]

TRAIN_SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from zodi_core.seg.train import train_model
out = train_model(sys.argv[1], sys.argv[2], sys.argv[3], max_iters=2, resume="auto",
                  overrides={"default_hooks.logger.interval": 1})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel_data")
    return write_dataset(root, n=4)


def scalars(work_dir: Path) -> list[dict]:
    records = []
    for f in sorted(work_dir.glob("*/vis_data/scalars.json")):
        records += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return records


def test_work_dir_lock_excludes_a_second_holder_until_released(tmp_path):
    work = str(tmp_path / "w")
    with work_dir_lock(work):
        with pytest.raises(TimeoutError, match="another training run held"):
            with work_dir_lock(work, timeout=0.3):
                pass
    with work_dir_lock(work, timeout=0.3) as path:  # free again
        assert path == lock_path(work) and path.parent == tmp_path / "w"
    remote = lock_path("s3://bucket/root/train/zodi-night/seed0")
    assert remote != lock_path("s3://bucket/root/train/zodi-night/seed1")


def test_two_processes_training_one_model_take_turns_in_its_work_dir(data, tmp_path):
    work = tmp_path / "train" / "zodi-night" / "seed0"
    logs = [tmp_path / f"run{i}.err" for i in range(2)]
    procs = []
    # Hold the work dir's lock while both start, so that both must wait for it.
    with work_dir_lock(str(work)):
        for log in logs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", TRAIN_SCRIPT, DEMO, data["paired"], str(work)],
                    stdout=subprocess.PIPE,
                    stderr=log.open("w"),
                    text=True,
                    cwd=ROOT,
                )  # fmt: skip
            )
        deadline = time.monotonic() + 300
        while not all("waiting for it" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
    results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    assert {Path(r["checkpoint"]).name for r in results} == {"iter_2.pth"}
    # One trained; the other waited, then found the schedule done and trained nothing.
    assert sorted(bool(r["losses"]) for r in results) == [False, True]
    steps = [r["step"] for r in scalars(work) if "loss_sim" in r]
    assert steps == [1, 2], f"the work dir was trained into more than once: {steps}"


def test_cli_train_on_two_cpu_processes_with_gloo(data, tmp_path, capsys):
    work = tmp_path / "ddp"
    code = main(["train", "--config", DEMO, "--paired-manifest", data["paired"],
                 "--work-dir", str(work), "--max-iters", "2", "--gpus", "2", "--scheme", "concat",
                 "--device", "cpu", "--verbose", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert Path(summary["checkpoint"]).name == "iter_2.pth" and summary["iterations"] == 2
    assert {"loss_sim", "ce_src", "ce_gen"} <= set(summary["losses"])
    log = "\n".join(p.read_text() for p in work.glob("*/*.log"))
    assert "Distributed launcher: pytorch" in log and "Distributed training: True" in log
    assert "GPU number: 2" in log  # mmengine's name for the world size


def test_cli_train_refuses_the_release_scheme_under_ddp(data, tmp_path, capsys):
    code = main(["train", "--config", DEMO, "--paired-manifest", data["paired"],
                 "--work-dir", str(tmp_path), "--gpus", "2"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "zodi train: error: --gpus 2: the 'release' scheme cannot run under DDP" in err
    assert "--scheme concat" in err
