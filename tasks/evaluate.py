"""Evaluation task: one planned evaluation (a model, all its seeds, targets and/or one proxy)."""

from __future__ import annotations

import json
from typing import Any

from prefect.context import TaskRunContext

from tasks._cache import cache_key, cached_task, content_digest, run_fresh
from zodi_core import storage
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


def report_matches(job: EvaluationJob, result: dict[str, Any]) -> bool:
    """Whether the report a cached evaluation points at is still the one it wrote: the same
    checkpoints and targets (a model's report folder is shared by its evaluations, so another
    evaluation of that model, e.g. with other seeds, rewrites it)."""
    try:
        report = json.loads(storage.read_bytes(result["report_json"]))
    except (OSError, ValueError, KeyError):
        return False
    manifests = {*job.manifests, *([job.proxy] if job.proxy else [])}
    return report.get("checkpoints") == list(job.checkpoints) and manifests == {
        t.get("manifest") for t in report.get("targets", {}).values()
    }


def evaluate_fresh(job: EvaluationJob, out: str, evaluation: EvalConfig) -> dict[str, Any]:
    """:func:`evaluate_checkpoint_task`, whose cache hit counts only while its report is still in
    storage and still its own (:func:`report_matches`); else the evaluation runs again."""
    return run_fresh(
        evaluate_checkpoint_task, "report_json", job, out, evaluation,
        valid=lambda result: report_matches(job, result),
    )  # fmt: skip
