"""Training task: one mmseg model, one seed."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from tasks._policy import content_digest
from zodi_core import storage
from zodi_core.config import TrainConfig, config_digest
from zodi_core.seg.train import resolve_config_path, train_model


def _train_cache_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    # Same config file content, same manifests' content, same settings and seed → same model.
    config_file = str(resolve_config_path(p["config_name"]))
    manifests = [u for u in (p["paired_uri"], p["source_uri"]) if u]
    parts = [
        content_digest(config_file, *manifests),
        config_digest(p["train"]),
        str(p["seed"]),
        p["work_dir"],
    ]
    return "train-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


@task(task_run_name="train-{name}-seed{seed}", cache_key_fn=_train_cache_key, persist_result=True)
def train_model_task(
    name: str,
    config_name: str,
    paired_uri: str | None,
    source_uri: str | None,
    work_dir: str,
    train: TrainConfig,
    seed: int,
) -> dict[str, Any]:
    """Train one model (resuming from the work dir's last checkpoint if a run died)."""
    resume = any(k.endswith(".pth") for k in storage.open_storage(work_dir).list())
    result = train_model(
        config_name,
        paired_uri,
        work_dir,
        seed=seed,
        resume=resume,
        source_manifest_uri=source_uri,
        train_config=train,
    )
    return {"name": name, "seed": seed, **result}
