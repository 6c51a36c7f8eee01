"""Training task: one planned training run (a model, one seed). The work dir depends on the
settings (:func:`training_work_dir`): other settings never resume another's checkpoints; a killed
run of the same settings resumes its own."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect.context import TaskRunContext

from tasks._cache import cache_key, cached_task, content_digest, run_fresh
from zodi_core import layout
from zodi_core.config import TrainConfig, config_digest
from zodi_core.runs import TrainingRun
from zodi_core.seg.train import resolve_config_path, train_model


def _settings_digest(run: TrainingRun, source_uri: str | None, train: TrainConfig) -> str:
    """Digest of the config file's and manifests' content and the training settings; of the
    seeds, only the run's own (a run of seed 0 is the same whether seeds 0-2 or 0 are planned)."""
    config_file = str(resolve_config_path(run.mmseg_config))
    manifests = [u for u in (run.paired_manifest, source_uri) if u]
    parts = [
        content_digest(config_file, *manifests),
        config_digest(train.replace(seeds=(run.seed,))),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def training_work_dir(
    run: TrainingRun, source_uri: str | None, root: str, train: TrainConfig
) -> str:
    """``<root>/train/<name>/seed<n>/<settings digest>``: the run's work dir for these settings."""
    return layout.train_work_dir(root, run.name, run.seed, _settings_digest(run, source_uri, train))


def _train_cache_key(context: TaskRunContext | None, p: dict[str, Any]) -> str:
    run: TrainingRun = p["run"]
    settings = _settings_digest(run, p["source_uri"], p["train"])
    return cache_key("train", settings, str(run.seed), run.name, p["work_dir"])


@cached_task(_train_cache_key, task_run_name="train-{run.name}-seed{run.seed}")
def train_model_task(
    run: TrainingRun, source_uri: str | None, work_dir: str, train: TrainConfig
) -> dict[str, Any]:
    """Train one planned run; a run that died resumes from its work dir's last checkpoint, and a
    second run of the same model waits for the first (the work dir's lock), then reuses it."""
    result = train_model(
        run.mmseg_config,
        run.paired_manifest,
        work_dir,
        seed=run.seed,
        resume="auto",
        source_manifest_uri=source_uri,
        train_config=train,
        source_only=run.source_only,
        progress=True,  # the compact iteration line (iter, losses, ETA) on stderr
    )
    return {"name": run.name, "domain": run.domain, "seed": run.seed, **result}


def train_run(
    run: TrainingRun, source_uri: str | None, root: str, train: TrainConfig
) -> dict[str, Any]:
    """Train one run (in this process) in its work dir; a cache record whose checkpoint storage
    no longer holds trains again (resuming from what is left of its work dir)."""
    work_dir = training_work_dir(run, source_uri, root, train)
    return run_fresh(train_model_task, "checkpoint", run, source_uri, work_dir, train)
