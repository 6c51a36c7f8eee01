"""train_flow: a source-only baseline and one ZoDi model per domain, for every seed."""

from __future__ import annotations

from prefect import flow

from tasks.train import train_model_task
from zodi_core import storage
from zodi_core.config import TrainConfig


@flow(name="train_flow")
def train_flow(
    source_uri: str, paired: dict[str, str], root: str, train: TrainConfig
) -> dict[str, list[dict]]:
    """Return {model name: [train result per seed]}; names are ``source-only`` and ``zodi-<domain>``."""
    # 1. the jobs: (name, mmseg config, paired manifest or None)
    jobs = [("source-only", train.source_only_config, None)]
    jobs += [(f"zodi-{d}", train.config, uri) for d, uri in sorted(paired.items())]
    # 2. train every job and seed, one at a time: mmengine's Runner keeps process-global state
    #    (default scope, message hub, logger), so runs in one process must not overlap
    out: dict[str, list[dict]] = {}
    for name, config, paired_uri in jobs:
        for seed in train.seeds:
            work_dir = storage.join_uri(root, "train", name, f"seed{seed}")
            result = train_model_task(name, config, paired_uri, source_uri, work_dir, train, seed)
            out.setdefault(name, []).append(result)
    return out
