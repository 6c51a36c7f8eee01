"""transfer_flow: a samples manifest → generated images and one paired manifest per domain."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.states import Failed

from tasks.transfer import (
    collect_shard_states,
    merge_shards_task,
    shard_manifest_task,
    transfer_shard_task,
)
from zodi_core import pipeline
from zodi_core.config import TransferConfig


@flow(name="transfer_flow")
def transfer_flow(
    samples_uri: str,
    domains: list[str],
    out_root: str,
    transfer: TransferConfig,
    shard_size: int = 8,
    shard_indices: list[int] | None = None,
) -> Any:
    """Transfer every shard to every domain; merge shard manifests into paired manifests.

    Returns ``{"domains": {domain: summary}, "paired": {domain: uri}}``; when any shard failed,
    a Failed state whose message names the failed shards and whose data is that same dict.
    Rerunning recomputes only the failed shards: the others are cache hits.
    ``shard_indices`` runs only those shards (a fan-out child, flows/fanout.py) and skips the
    merge: the parent merges once every group is done.
    """
    logger = get_run_logger()
    # 1. shard the source manifest (sorted by sample_id, content digests)
    shards = shard_manifest_task(samples_uri, shard_size)
    if shard_indices is not None:
        shards = pipeline.select_shards(shards, shard_indices)
    result: dict[str, Any] = {"domains": {}, "paired": {}}
    for domain in domains:
        config = transfer.replace(domain=domain)
        # 2. transfer all shards in parallel on the task runner
        futures = transfer_shard_task.map(shards, unmapped(config), unmapped(out_root))
        # 3. wait, and sort shards into computed / cached / failed
        summary, shard_uris = collect_shard_states(shards, futures)
        logger.info("%s: %s", domain, summary.line())
        result["domains"][domain] = summary.to_dict()
        # 4. merge into the domain's paired manifest, only when every shard succeeded
        if not summary.shards_failed and shard_indices is None:
            merged = merge_shards_task(
                shard_uris, pipeline.paired_manifest_uri(out_root, domain), domain
            )
            result["paired"][domain] = merged["uri"]
    # 5. fail the run, naming the failed shards, or return the summary
    failed = {d: s["shards_failed"] for d, s in result["domains"].items() if s["shards_failed"]}
    if failed:
        names = "; ".join(f"{d}: {', '.join(sorted(s))}" for d, s in failed.items())
        return Failed(message=f"transfer shards failed: {names}", data=result)
    return result
