"""train_flow: a source-only baseline and one ZoDi model per domain, for every seed."""

from __future__ import annotations

from prefect import flow

from tasks.train import train_run
from zodi_core import runs
from zodi_core.config import TrainConfig


@flow(name="train_flow")
def train_flow(
    source_uri: str,
    paired: dict[str, str],
    root: str,
    train: TrainConfig,
    baseline: bool = True,
) -> dict[str, list[dict]]:
    """Return {model name: [train result per seed]} (names from :func:`zodi_core.runs.run_name`).
    ``baseline`` False: ZoDi models only (an ablation, e.g. λ = 0, whose baseline exists)."""
    # 1. plan: the source-only baseline and one ZoDi model per domain, every seed
    planned = [r for r in runs.plan_training_runs(train, paired) if baseline or not r.source_only]
    # 2. train one run at a time (mmengine's Runner keeps process-global state); a cached run
    #    whose checkpoint is gone from storage trains again
    out: dict[str, list[dict]] = {}
    for run in planned:
        out.setdefault(run.name, []).append(train_run(run, source_uri, root, train))
    return out
