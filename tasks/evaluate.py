"""Evaluation task: one model (all its seeds) on the real targets and one proxy set."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from tasks._policy import content_digest
from zodi_core.config import EvalConfig, config_digest
from zodi_core.evaluation import evaluate_checkpoint


def _eval_cache_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    uris = [
        *p["checkpoints"],
        *p["manifests"],
        *([p["proxy_manifest"]] if p["proxy_manifest"] else []),
    ]
    parts = [content_digest(*uris), p["config_name"], config_digest(p["evaluation"]), p["out"]]
    return "eval-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


@task(task_run_name="evaluate-{name}", cache_key_fn=_eval_cache_key, persist_result=True)
def evaluate_model_task(
    name: str,
    checkpoints: list[str],
    config_name: str,
    manifests: list[str],
    proxy_manifest: str | None,
    out: str,
    evaluation: EvalConfig,
) -> dict[str, Any]:
    """Evaluate a model's final checkpoint of every seed; return mIoU per target + report URIs."""
    result = evaluate_checkpoint(
        checkpoints,
        config_name,
        manifests,
        out,
        proxy_manifest=proxy_manifest,
        eval_config=evaluation,
    )
    return {"name": name, **result}
