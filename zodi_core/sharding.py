"""Sharding: a samples manifest split into shards, their outputs checked, their manifests merged.

A shard is the unit of transfer work (one Prefect task); shards pass as :class:`ShardRef`
references (manifest URI, sample ids, content digest), never as data.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from zodi_core import integrity, layout, manifest
from zodi_core.config import TransferConfig
from zodi_core.transfer.lineage import generation_digest


@dataclass(frozen=True)
class ShardRef:
    """One shard of a samples manifest: which rows, and a digest of their content."""

    index: int
    samples_uri: str
    sample_ids: tuple[str, ...]
    digest: str

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


def shard_digest(table: pa.Table) -> str:
    """Digest of a shard's content: its sample ids and the hashes of their image and label."""
    h = hashlib.sha256()
    cols = [table.column(c).to_pylist() for c in ("sample_id", "image_sha256", "label_sha256")]
    for sid, img, lab in sorted(zip(*cols, strict=True)):
        h.update(f"{sid}\0{img}\0{lab}\n".encode())
    return h.hexdigest()[:16]


def shard_manifest(samples_uri: str, shard_size: int) -> list[ShardRef]:
    """Split a samples manifest into shards of ``shard_size`` rows, in sample_id order, so a
    re-ingest of the same data in another row order gives the same shards (and cache keys)."""
    if shard_size < 1:
        raise ValueError(f"shard_size: expected an integer >= 1, received {shard_size}")
    table = manifest.read_manifest(samples_uri, "samples")
    if table.num_rows == 0:
        raise ValueError(f"{samples_uri}: the samples manifest is empty; nothing to transfer")
    table = table.sort_by("sample_id")
    parts = [table.slice(start, shard_size) for start in range(0, table.num_rows, shard_size)]
    return [
        ShardRef(i, samples_uri, tuple(p.column("sample_id").to_pylist()), shard_digest(p))
        for i, p in enumerate(parts)
    ]


def select_shards(shards: Sequence[ShardRef], indices: Sequence[int]) -> list[ShardRef]:
    """The shards with these indices, in index order (a fan-out child's share of the work)."""
    by_index = {s.index: s for s in shards}
    unknown = sorted(set(indices) - set(by_index))
    if unknown:
        raise ValueError(
            f"shard_indices: expected indices in 0..{len(shards) - 1}, received unknown {unknown}"
        )
    return [by_index[i] for i in sorted(set(indices))]


def group_shards(n_shards: int, shards_per_run: int) -> list[list[int]]:
    """Split shard indices 0..n_shards-1 into consecutive groups, one fan-out flow run each."""
    if shards_per_run < 1:
        raise ValueError(f"shards_per_run: expected an integer >= 1, received {shards_per_run}")
    indices = list(range(n_shards))
    return [indices[i : i + shards_per_run] for i in range(0, n_shards, shards_per_run)]


def shard_manifest_uri(
    root: str, shard: ShardRef, config: TransferConfig, digest: str | None = None
) -> str:
    """Where one shard's transfer manifest goes: named by shard content and generation digest
    (``digest``; None: :func:`~zodi_core.transfer.lineage.generation_digest` of ``config``)."""
    digest = digest or generation_digest(config)
    key = layout.shard_manifest_key(config.domain, shard.name, shard.digest, digest)
    return layout.uri(root, key)


def missing_outputs(manifest_uris: Sequence[str]) -> dict[str, list[str]]:
    """What the given transfer manifests point at that storage no longer holds intact.

    ``{manifest_uri: [URIs]}``; a missing or unreadable manifest lists itself. Writes are atomic,
    so a present key of the recorded size is the object written; damage that keeps the size is
    ``zodi verify``'s job (hashes).
    """
    out: dict[str, list[str]] = {}
    listings: dict[str, dict[str, int]] = {}
    for uri in manifest_uris:
        try:
            table = manifest.read_manifest(uri, "transfer")
        except (manifest.ManifestError, FileNotFoundError):
            out[uri] = [uri]
            continue
        damaged = integrity.damaged_images(integrity.recorded_images(table), listings)
        if damaged:
            out[uri] = list(damaged)
    return out


def merge_shard_manifests(shard_uris: Sequence[str], out_uri: str, domain: str) -> dict[str, Any]:
    """Concatenate the transfer manifests of all shards of one domain into its paired manifest.

    Only rows with an image (ok or skipped) are kept; failures are counted and reported.
    """
    if not shard_uris:
        raise ValueError(f"domain {domain}: no shard manifests to merge")
    tables = [manifest.read_manifest(u, "transfer") for u in shard_uris]
    table = pa.concat_tables(tables).sort_by("sample_id")
    dupes = sorted(i for i, n in Counter(table.column("sample_id").to_pylist()).items() if n > 1)
    if dupes:
        raise ValueError(f"domain {domain}: samples in more than one shard: {dupes[:10]}")
    good = integrity.image_rows(table)
    digests = sorted(set(good.column("config_digest").to_pylist()))
    meta = {"domain": domain, "config_digests": ",".join(digests)}
    manifest.write_manifest(good, out_uri, "transfer", extra_metadata=meta)
    return {
        "uri": out_uri,
        "rows": good.num_rows,
        "failed": table.num_rows - good.num_rows,
        "config_digests": digests,
    }
