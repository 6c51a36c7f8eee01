"""Evaluation task: one planned evaluation (a model, all its seeds, targets and/or one proxy)."""

from __future__ import annotations

from typing import Any

from prefect.context import TaskRunContext

from tasks._cache import cache_key, cached_task, content_digest
from zodi_core.config import EvalConfig, config_digest
from zodi_core.evaluation import evaluate_checkpoint
from zodi_core.runs import EvaluationJob


def _eval_cache_key(context: TaskRunContext | None, p: dict[str, Any]) -> str:
    job: EvaluationJob = p["job"]
    files = content_digest(*job.checkpoints, *job.manifests, *([job.proxy] if job.proxy else []))
    return cache_key("eval", files, job.mmseg_config, config_digest(p["evaluation"]), p["out"])


@cached_task(_eval_cache_key, task_run_name="evaluate-{job.slug}")
def evaluate_checkpoint_task(
    job: EvaluationJob, out: str, evaluation: EvalConfig
) -> dict[str, Any]:
    """Evaluate a model's final checkpoint of every seed; return mIoU per target + report URIs."""
    result = evaluate_checkpoint(
        list(job.checkpoints),
        job.mmseg_config,
        list(job.manifests),
        out,
        proxy_manifest=job.proxy,
        eval_config=evaluation,
    )
    return {"name": job.model, **result}
