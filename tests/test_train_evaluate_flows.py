"""train_flow and evaluate_flow under Prefect: planned runs through the tasks, cached reruns (a
deleted checkpoint trains again), and evaluation planned from the trained runs (tiny data, one
iteration per run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)

from zodi_core.config import EvalConfig, TrainConfig


def test_train_then_evaluate_flows_plan_name_and_evaluate_every_model(prefect_harness, tmp_path):
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow

    train_data = write_dataset(tmp_path / "data", n=2)
    val = write_dataset(tmp_path / "data", n=2, split="val")
    root = str(tmp_path / "root")
    train = TrainConfig.preset("demo", max_iters=1, seeds=(0,))
    models = train_flow(train_data["samples"], {"night": train_data["paired"]}, root, train)
    assert set(models) == {"source-only", "zodi-night"}
    zodi, base = models["zodi-night"][0], models["source-only"][0]
    assert (zodi["domain"], zodi["seed"], base["domain"]) == ("night", 0, None)
    assert base["source_only"] and not zodi["source_only"]
    # <root>/train/<model>/seed<n>/<settings digest>/: each budget/schedule/data its own folder
    settings = Path(zodi["checkpoint"]).parent.name
    assert zodi["checkpoint"] == f"{root}/train/zodi-night/seed0/{settings}/iter_1.pth"
    assert len(settings) == 12 and settings != Path(base["checkpoint"]).parent.name
    assert Path(base["checkpoint"]).is_file() and "loss_sim" in zodi["losses"]
    # A rerun hits the task cache (same inputs, same settings): nothing is trained again.
    again = train_flow(train_data["samples"], {"night": train_data["paired"]}, root, train)
    assert again == models
    # Storage is the truth: a cached run whose checkpoint was deleted trains again, alone.
    Path(zodi["checkpoint"]).unlink()
    deleted_at = time.time()
    third = train_flow(train_data["samples"], {"night": train_data["paired"]}, root, train)
    assert third["source-only"] == models["source-only"]  # still a cache hit
    # trained again: the checkpoint is back, written after the deletion (comparing the result
    # dicts is not enough: a deterministic one-iteration rerun may match to the 0.01 s it records)
    assert Path(third["zodi-night"][0]["checkpoint"]).stat().st_mtime >= deleted_at
    assert third["zodi-night"][0]["losses"]
    results = evaluate_flow(
        models, {"acdc-night-val": val["target"]}, {"night": val["paired"]}, root, train,
        EvalConfig.preset("demo", device="cpu"),
    )  # fmt: skip
    assert set(results) == {"source-only", "zodi-night"}
    for model in ("source-only", "zodi-night"):
        proxy = results[model]["proxy"]["night"]
        assert proxy["real_mIoU"] == results[model]["targets"]["acdc-night-val"]["mIoU"]
        report = json.loads((Path(root) / "eval" / model / "report.json").read_text())
        assert report["config"].endswith("deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py")
    # Storage is the truth for evaluations too: the model's report folder is shared, so another
    # evaluation of it (here two seeds) rewrites the report; the first one's cache hit then no
    # longer points at its own report and evaluates again (it once returned the other's report).
    report_of = lambda: json.loads((Path(root) / "eval/zodi-night/report.json").read_text())  # noqa: E731
    two_seeds = {"zodi-night": [*models["zodi-night"], {**base, "seed": 1}]}
    args = ({"acdc-night-val": val["target"]}, {"night": val["paired"]}, root, train)
    evaluate_flow(two_seeds, *args, EvalConfig.preset("demo", device="cpu"))
    assert len(report_of()["checkpoints"]) == 2
    again = evaluate_flow(
        {"zodi-night": models["zodi-night"]}, *args, EvalConfig.preset("demo", device="cpu")
    )
    assert report_of()["checkpoints"] == [models["zodi-night"][0]["checkpoint"]]
    assert again["zodi-night"]["targets"] == results["zodi-night"]["targets"]
