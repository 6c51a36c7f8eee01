"""evaluate_flow: every trained model on every real target and on the proxy targets."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.evaluate import evaluate_fresh
from zodi_core import layout, runs
from zodi_core.config import EvalConfig, TrainConfig


@flow(name="evaluate_flow")
def evaluate_flow(
    models: dict[str, list[dict]],
    targets: dict[str, str],
    proxies: dict[str, str],
    root: str,
    train: TrainConfig,
    evaluation: EvalConfig,
    target_domains: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """Return {model: {"targets": {name: {"mIoU"}}, "proxy": {domain: {"mIoU", "real_mIoU"}}}}."""
    # 1. plan: each model once per proxy domain (real targets only in the first job)
    # (target_domains: target manifest → the domain it evaluates, DatasetSpec.target_domain)
    jobs = runs.plan_evaluations(models, list(targets.values()), proxies, target_domains)
    # 2. evaluate (sequentially: one model in memory at a time)
    results = [evaluate_fresh(job, layout.eval_dir(root, job.slug), evaluation) for job in jobs]
    # 3. one result per model, proxies beside the matching real target
    return runs.collect_evaluations(jobs, results)
