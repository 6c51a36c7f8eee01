"""Transfer tasks: shard a samples manifest, transfer one shard, merge shard manifests."""

from __future__ import annotations

import functools
import hashlib
import threading
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.futures import as_completed

import zodi_core
from tasks._cache import cache_key, cached_task, cached_values
from tasks._policy import IO_RETRIES, retry_on_io
from tasks.artifacts import TransferProgress
from zodi_core import sharding
from zodi_core.config import ModelsConfig, TransferConfig
from zodi_core.device import resolve_device
from zodi_core.report import RunSummary
from zodi_core.sharding import ShardRef
from zodi_core.transfer.lineage import generation_digest, models_fingerprint
from zodi_core.transfer.models import Components, load_components
from zodi_core.transfer.runner import partial_counts, transfer_manifest


class ShardFailed(RuntimeError):
    """Some images of a shard failed; the images that succeeded are written and kept."""

    def __init__(self, shard: str, counts: dict[str, Any], errors: dict[str, str]) -> None:
        first = "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:3])
        super().__init__(f"{shard}: {counts['failed']} image(s) failed ({first})")
        self.shard, self.partial_counts, self.errors = shard, counts, errors


_LOAD_LOCK = threading.Lock()
#: Images written by failed attempts of a task run (by task run id), counted when a retry ends.
_EARLIER_WRITES: dict[str, int] = {}


@functools.lru_cache(maxsize=2)
def _load_components(models_json: str, device: str, dtype: str) -> Components:
    # One load per worker process, shared by every shard it runs.
    dev, dt = resolve_device(device, dtype)
    return load_components(ModelsConfig.model_validate_json(models_json), dev, dt)


def _components(models_json: str, device: str, dtype: str) -> Components:
    # Shard tasks run in threads, and from_pretrained's meta-device initialisation is global.
    with _LOAD_LOCK:
        return _load_components(models_json, device, dtype)


@functools.cache
def code_version() -> str:
    """Version of the generating code: package version + transfer sources (read once a process)."""
    root = Path(zodi_core.__file__).parent
    h = hashlib.sha256(zodi_core.__version__.encode())
    for f in [root / "conditions.py", *sorted((root / "transfer").glob("*.py"))]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def _shard_cache_key(context: TaskRunContext | None, p: dict[str, Any]) -> str:
    """Shard content, settings, models, code and ``out_root`` (where its images are); not the run
    id, so the same shard with the same settings is reused across runs."""
    digest = generation_digest(p["config"])
    return cache_key("transfer", p["shard"].digest, digest, code_version(), p["out_root"])


shard_manifest_task = task(sharding.shard_manifest, name="shard_manifest_task")


@cached_task(
    _shard_cache_key,
    task_run_name="transfer-{config.domain}-shard-{shard.index}",
    # After botocore's own retries (zodi_core/storage/s3.py): a rerun skips the written images.
    retries=3,
    retry_delay_seconds=[10, 20, 40],
    retry_condition_fn=retry_on_io,
)
def transfer_shard_task(shard: ShardRef, config: TransferConfig, out_root: str) -> dict[str, Any]:
    """Transfer one shard; return its shard manifest URI and image counts. :class:`ShardFailed`
    when any image failed: not cached, so a rerun recomputes it (skipping written images)."""
    fingerprint = models_fingerprint(config.models)
    digest = generation_digest(config, fingerprint)
    run_id = str(TaskRunContext.get().task_run.id)
    try:
        result = transfer_manifest(
            shard.samples_uri,
            config,
            out_root,
            sample_ids=shard.sample_ids,
            manifest_uri=sharding.shard_manifest_uri(out_root, shard, config, digest),
            components=functools.partial(
                _components, config.models.model_dump_json(), config.device, config.dtype
            ),
            progress=False,
            models_fingerprint=fingerprint,
        )
    except BaseException as err:
        # A retried attempt skips what this one wrote: remember it, so the run counts it
        counts = partial_counts(err)
        if counts is not None:
            _EARLIER_WRITES[run_id] = _EARLIER_WRITES.get(run_id, 0) + counts["written"]
            counts["written"] = _EARLIER_WRITES[run_id]
        raise
    counts = {"shard": shard.name, **result.summary()}
    earlier = _EARLIER_WRITES.pop(run_id, 0)  # skipped by this attempt, written by an earlier one
    counts.update(written=counts["written"] + earlier, skipped=counts["skipped"] - earlier)
    if result.failed:
        raise ShardFailed(shard.name, counts, result.errors)
    return counts


merge_shard_manifests_task = task(
    sharding.merge_shard_manifests, name="merge_shard_manifests_task", **IO_RETRIES
)


def check_cached_shards(
    shards: list[ShardRef], config: TransferConfig, out_root: str
) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """``(intact, stale)``: cached results (by shard index) whose outputs storage holds, and the
    indices whose outputs storage lost (:func:`zodi_core.sharding.missing_outputs`)."""
    keys = {
        _shard_cache_key(None, {"shard": s, "config": config, "out_root": out_root}): s.index
        for s in shards
    }
    cached = {keys[k]: v for k, v in cached_values(transfer_shard_task, list(keys)).items()}
    manifests = {value["manifest"]: index for index, value in cached.items()}
    stale = {manifests[uri] for uri in sharding.missing_outputs(list(manifests))}
    return {i: v for i, v in cached.items() if i not in stale}, stale


def submit_shards(
    shards: list[ShardRef], config: TransferConfig, out_root: str, stale: set[int]
) -> list[Any]:
    """Submit one transfer task per shard; ``stale`` shards refresh their cache record."""
    refresh = transfer_shard_task.with_options(refresh_cache=True)
    return [
        (refresh if shard.index in stale else transfer_shard_task).submit(shard, config, out_root)
        for shard in shards
    ]


def collect_shard_states(
    shards: list[ShardRef],
    futures: list[Any],
    progress: TransferProgress,
    cached: dict[int, dict[str, Any]],
) -> tuple[RunSummary, list[str]]:
    """Wait for every shard (``futures``: the shards not in ``cached``, in order), then sort them
    into computed / cached (images count as skipped) / failed (counts what it really wrote)."""
    submitted = [s for s in shards if s.index not in cached]
    by_future = {id(f): s for s, f in zip(submitted, futures, strict=True)}
    for shard in [s for s in shards if s.index in cached]:
        progress.shard_done(shard)
    for future in as_completed(futures):
        future.wait()  # finished: this records its final state without an API call
        progress.shard_done(by_future[id(future)], failed=not future.state.is_completed())
    states = {s.index: f.state for s, f in zip(submitted, futures, strict=True)}
    summary, uris = RunSummary(), []
    for shard in shards:
        state = states.get(shard.index)
        value = state.result(raise_on_failure=False) if state else cached[shard.index]
        if state and not state.is_completed():
            summary.shards_failed[shard.name] = str(value) if value else (state.message or "")
            summary.add_images(partial_counts(value) or {})
            continue
        hit = state is None or state.name == "Cached"  # Prefect's name of a cache hit
        uris.append(value["manifest"])
        (summary.shards_cached if hit else summary.shards_computed).append(shard.name)
        summary.add_images({"skipped": value["written"] + value["skipped"]} if hit else value)
    return summary, uris
