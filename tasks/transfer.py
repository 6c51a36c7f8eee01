"""Transfer tasks: shard a samples manifest, transfer one shard, merge shard manifests."""

from __future__ import annotations

import functools
import threading
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from tasks._policy import retry_on_io
from zodi_core import pipeline
from zodi_core.config import ModelsConfig, TransferConfig
from zodi_core.transfer.models import Components, load_components, resolve_device
from zodi_core.transfer.runner import transfer_manifest


class ShardFailed(RuntimeError):
    """Some images of a shard failed; the images that succeeded are written and kept."""

    def __init__(self, shard: str, counts: dict[str, Any], errors: dict[str, str]) -> None:
        first = "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:3])
        super().__init__(f"{shard}: {counts['failed']} image(s) failed ({first})")
        self.shard, self.counts, self.errors = shard, counts, errors


_LOAD_LOCK = threading.Lock()


def _components(models_json: str, device: str, dtype: str) -> Components:
    # One load per worker process, shared by every shard it runs. Loading holds a lock: shard
    # tasks run in threads, and from_pretrained's meta-device initialisation is process-global.
    with _LOAD_LOCK:
        return _load_cached(models_json, device, dtype)


@functools.lru_cache(maxsize=2)
def _load_cached(models_json: str, device: str, dtype: str) -> Components:
    dev, dt = resolve_device(device, dtype)
    return load_components(ModelsConfig.model_validate_json(models_json), dev, dt)


def _shard_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    config: TransferConfig = parameters["config"]
    revisions = pipeline.models_fingerprint(config.models)
    return pipeline.transfer_cache_key(
        parameters["shard"], config, parameters["out_root"], revisions
    )


@task
def shard_manifest_task(samples_uri: str, shard_size: int) -> list[pipeline.ShardRef]:
    return pipeline.shard_manifest(samples_uri, shard_size)


@task(
    task_run_name="transfer-{config.domain}-shard-{shard.index}",
    cache_key_fn=_shard_cache_key,
    persist_result=True,
)
def transfer_shard_task(
    shard: pipeline.ShardRef, config: TransferConfig, out_root: str
) -> dict[str, Any]:
    """Transfer one shard; return its shard manifest URI and image counts.

    Raises :class:`ShardFailed` when any image failed, so the shard is not cached and a rerun
    recomputes it (its already written images are skipped by digest).
    """
    components = _components(config.models.model_dump_json(), config.device, config.dtype)
    result = transfer_manifest(
        shard.samples_uri,
        config,
        out_root,
        sample_ids=shard.sample_ids,
        manifest_uri=pipeline.shard_output_uri(out_root, config.domain, shard, config),
        components=components,
        progress=False,
    )
    counts = {"shard": shard.name, **result.summary()}
    if result.failed:
        raise ShardFailed(shard.name, counts, result.errors)
    return counts


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def merge_shards_task(shard_uris: list[str], out_uri: str, domain: str) -> dict[str, Any]:
    return pipeline.merge_shard_manifests(shard_uris, out_uri, domain)


def collect_shard_states(
    shards: list[pipeline.ShardRef], futures: list[Any]
) -> tuple[pipeline.RunSummary, list[str]]:
    """Wait for every shard, then sort them into computed / cached / failed.

    Prefect names a cache hit's state "Cached". A cached shard's images count as skipped (they
    were reused, not written by this run).
    """
    summary = pipeline.RunSummary()
    uris: list[str] = []
    for shard, future in zip(shards, futures, strict=True):
        future.wait()
        state = future.state
        value = state.result(raise_on_failure=False)
        if state.is_completed():
            uris.append(value["manifest"])
            if state.name == "Cached":
                summary.shards_cached.append(shard.name)
                summary.add_images({"skipped": value["written"] + value["skipped"]})
            else:
                summary.shards_computed.append(shard.name)
                summary.add_images(value)
        else:
            summary.shards_failed[shard.name] = str(value) if value else (state.message or "")
            if isinstance(value, ShardFailed):
                summary.add_images(value.counts)
    return summary, uris
