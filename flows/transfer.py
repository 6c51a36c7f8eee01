"""transfer_flow: a samples manifest → generated images and one paired manifest per domain."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from tasks.artifacts import TransferProgress
from tasks.transfer import (
    check_cached_shards,
    collect_shard_states,
    merge_shard_manifests_task,
    shard_manifest_task,
    submit_shards,
)
from zodi_core import layout, sharding
from zodi_core.config import TransferConfig
from zodi_core.config.pipeline import DEFAULT_SHARD_SIZE


@flow(name="transfer_flow")
def transfer_flow(
    samples_uri: str,
    domains: list[str],
    out_root: str,
    transfer: TransferConfig,
    shard_size: int = DEFAULT_SHARD_SIZE,
    shard_indices: list[int] | None = None,
) -> Any:
    """Transfer every shard to every domain; merge shard manifests into paired manifests.

    Returns ``{"domains": {domain: summary}, "paired": {domain: uri}}``, or a Failed state naming
    the failed shards with it as data. ``shard_indices`` (a fan-out child): only those, no merge.
    """
    logger = get_run_logger()
    # 1. shard the source manifest (sorted by sample_id, content digests)
    shards = shard_manifest_task(samples_uri, shard_size)
    if shard_indices is not None:
        shards = sharding.select_shards(shards, shard_indices)
    result: dict[str, Any] = {"domains": {}, "paired": {}}
    for domain in domains:
        config = transfer.replace(domain=domain)
        # 2. storage is the truth: intact cached shards need no task run; lost ones are recomputed
        intact, stale = check_cached_shards(shards, config, out_root)
        if stale:
            logger.info("%s: %d cached shard(s) lost outputs; recomputing them", domain, len(stale))
        # 3. transfer the other shards in parallel on the task runner
        progress = TransferProgress(domain, out_root, shards, keyed=shard_indices is None)
        futures = submit_shards(
            [s for s in shards if s.index not in intact], config, out_root, stale
        )
        # 4. wait, and sort shards into computed / cached / failed
        summary, shard_uris = collect_shard_states(shards, futures, progress, intact)
        logger.info("%s: %s", domain, summary.line())
        result["domains"][domain] = asdict(summary)
        # 5. merge into the domain's paired manifest, only when every shard succeeded
        if not summary.shards_failed and shard_indices is None:
            out = layout.paired_manifest_uri(out_root, domain)
            result["paired"][domain] = merge_shard_manifests_task(shard_uris, out, domain)["uri"]
    # 6. fail the run, naming the failed shards, or return the summary
    failed = {d: s["shards_failed"] for d, s in result["domains"].items() if s["shards_failed"]}
    if failed:
        names = "; ".join(f"{d}: {', '.join(sorted(s))}" for d, s in failed.items())
        return Failed(message=f"transfer shards failed: {names}", data=result)
    return result
