"""evaluate_flow: every trained model on every real target and on the proxy targets."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.evaluate import evaluate_model_task
from zodi_core import pipeline, storage
from zodi_core.config import EvalConfig, TrainConfig


@flow(name="evaluate_flow")
def evaluate_flow(
    models: dict[str, list[dict]],
    targets: dict[str, str],
    proxies: dict[str, str],
    root: str,
    train: TrainConfig,
    evaluation: EvalConfig,
) -> dict[str, Any]:
    """Return {model: {"targets": {name: {"mIoU"}}, "proxy": {domain: {"mIoU", "real_mIoU"}}}}."""
    # 1. the jobs: each model once per proxy domain (real targets only in the first job)
    jobs = pipeline.evaluation_jobs(models, list(targets.values()), proxies)
    # 2. evaluate (sequentially: one model in memory at a time)
    runs = [
        evaluate_model_task(
            job["model"], job["checkpoints"], job["config"], job["manifests"], job["proxy"],
            storage.join_uri(root, "eval", job["slug"]), evaluation,
        )
        for job in jobs
    ]  # fmt: skip
    # 3. one result per model, proxies beside the matching real target
    return pipeline.collect_evaluations(jobs, runs)
