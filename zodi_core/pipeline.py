"""Pipeline logic that the Prefect tasks wrap: sharding, merging shard manifests, summaries, reports.

Everything here is plain Python over manifests and storage URIs, so it runs (and is tested)
without Prefect. Stages pass references: manifest URIs, digests, small dataclasses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from zodi_core import __version__, manifest, storage
from zodi_core.config import ModelsConfig, TransferConfig


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
    """Split a samples manifest into shards of ``shard_size`` rows, in sample_id order.

    Sorting first makes shard membership independent of the manifest's row order, so a
    re-ingest of the same data gives the same shards (and the same cache keys).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size: expected an integer >= 1, received {shard_size}")
    table = manifest.read_manifest(samples_uri, "samples")
    if table.num_rows == 0:
        raise ValueError(f"{samples_uri}: the samples manifest is empty; nothing to transfer")
    table = table.sort_by("sample_id")
    shards = []
    for i, start in enumerate(range(0, table.num_rows, shard_size)):
        part = table.slice(start, shard_size)
        shards.append(
            ShardRef(
                index=i,
                samples_uri=samples_uri,
                sample_ids=tuple(part.column("sample_id").to_pylist()),
                digest=shard_digest(part),
            )
        )
    return shards


def code_version() -> str:
    """Version of the code that generates images: package version + source of the transfer code."""
    root = Path(__file__).parent
    files = [root / "conditions.py", *sorted((root / "transfer").glob("*.py"))]
    h = hashlib.sha256(__version__.encode())
    for f in files:
        if f.exists():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def transfer_cache_key(
    shard: ShardRef, config: TransferConfig, out_root: str, model_revisions: str = ""
) -> str:
    """Cache key of one transfer shard: shard content, transfer config, model revisions, code,
    and the destination (a cached result points at images under ``out_root``).

    Not the run id: the same shard with the same settings is reused across runs.
    """
    from zodi_core.transfer.sampler import transfer_digest

    parts = [shard.digest, transfer_digest(config), model_revisions, code_version(), out_root]
    return "transfer-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def models_fingerprint(models: ModelsConfig) -> str:
    """Identity of the diffusion models for cache keys: hub id@revision, or a local folder's
    content digest (so replacing the weights in a folder invalidates cached shards)."""
    from zodi_core.transfer.models import folder_digest

    parts = []
    for source, revision in (
        (models.base, models.revision),
        (models.controlnet, models.controlnet_revision),
    ):
        if source is None:
            continue
        path = Path(source).expanduser()
        parts.append(
            f"{source}@local:{folder_digest(path)}"
            if path.is_dir()
            else f"{source}@{revision or 'main'}"
        )
    return ",".join(parts)


def shard_output_uri(root: str, domain: str, shard: ShardRef, config: TransferConfig) -> str:
    from zodi_core.transfer.sampler import transfer_digest

    name = f"{shard.name}-{shard.digest}-{transfer_digest(config)}.parquet"
    return storage.join_uri(root, "transfer", domain, "shards", name)


def paired_manifest_uri(root: str, domain: str) -> str:
    """Paired manifests are partitioned by domain, hive-style (``domain=<d>/``)."""
    return storage.join_uri(root, "paired", f"domain={domain}", "paired.parquet")


def merge_shard_manifests(shard_uris: Sequence[str], out_uri: str, domain: str) -> dict[str, Any]:
    """Concatenate the transfer manifests of all shards of one domain into its paired manifest.

    Rows are sorted by sample_id; duplicates (a sample in two shards) are an error. Only rows
    with an image (status ok or skipped) are kept; failures are counted and reported.
    """
    if not shard_uris:
        raise ValueError(f"domain {domain}: no shard manifests to merge")
    tables = [manifest.read_manifest(u, "transfer") for u in shard_uris]
    table = pa.concat_tables(tables).sort_by("sample_id")
    ids = table.column("sample_id").to_pylist()
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dupes:
        raise ValueError(f"domain {domain}: samples in more than one shard: {dupes[:10]}")
    good = table.filter(pc.is_in(table.column("status"), pa.array(["ok", "skipped"])))
    digests = sorted(set(good.column("config_digest").to_pylist()))
    manifest.write_manifest(
        good,
        out_uri,
        "transfer",
        extra_metadata={"domain": domain, "config_digests": ",".join(digests)},
    )
    return {
        "uri": out_uri,
        "rows": good.num_rows,
        "failed": table.num_rows - good.num_rows,
        "config_digests": digests,
    }


@dataclass
class RunSummary:
    """What a transfer run did, shard by shard and image by image."""

    shards_computed: list[str] = field(default_factory=list)
    shards_cached: list[str] = field(default_factory=list)
    shards_failed: dict[str, str] = field(default_factory=dict)
    images_written: int = 0
    images_skipped: int = 0
    images_failed: int = 0

    def add_images(self, counts: dict[str, int]) -> None:
        self.images_written += counts.get("written", 0)
        self.images_skipped += counts.get("skipped", 0)
        self.images_failed += counts.get("failed", 0)

    def merge(self, other: RunSummary) -> None:
        self.shards_computed += other.shards_computed
        self.shards_cached += other.shards_cached
        self.shards_failed.update(other.shards_failed)
        self.images_written += other.images_written
        self.images_skipped += other.images_skipped
        self.images_failed += other.images_failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"shards: {len(self.shards_computed)} computed, {len(self.shards_cached)} cached, "
            f"{len(self.shards_failed)} failed; images: {self.images_written} written, "
            f"{self.images_skipped} skipped, {self.images_failed} failed"
        )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render_report_markdown(report: dict[str, Any]) -> str:
    """Markdown report: mIoU per target, source-only vs ZoDi, proxy estimates, shard status."""
    lines = ["# ZoDi pipeline report", ""]
    if report.get("note"):
        lines += [f"> {report['note']}", ""]
    results = report.get("results", {})
    targets = sorted({t for r in results.values() for t in r.get("targets", {})})
    if results:
        lines += ["## mIoU (%) per target", ""]
        lines.append("| model | " + " | ".join(targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for name, res in results.items():
            cells = []
            for t in targets:
                cells.append(_pct(res.get("targets", {}).get(t, {}).get("mIoU")))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    proxies = {n: r.get("proxy", {}) for n, r in results.items() if r.get("proxy")}
    if proxies:
        lines += [
            "## Proxy estimate (generated target-like images of the source val split)",
            "",
            "| model | domain | proxy mIoU | real target mIoU |",
            "|---|---|---|---|",
        ]
        for name, per_domain in proxies.items():
            for domain, p in per_domain.items():
                real = p.get("real_mIoU")
                lines.append(f"| {name} | {domain} | {_pct(p.get('mIoU'))} | {_pct(real)} |")
        lines.append("")
    transfer = report.get("transfer", {})
    if transfer:
        lines += [
            "## Transfer",
            "",
            "| domain | shards computed | cached | failed | images written | skipped | failed |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for domain, s in transfer.items():
            lines.append(
                f"| {domain} | {len(s['shards_computed'])} | {len(s['shards_cached'])} | "
                f"{len(s['shards_failed'])} | {s['images_written']} | {s['images_skipped']} | "
                f"{s['images_failed']} |"
            )
        lines.append("")
    grids = report.get("sample_grids", {})
    if grids:
        lines += ["## Sample grids (source | condition | generated)", ""]
        for domain, uri in grids.items():
            lines.append(f"- {domain}: [{uri}]({uri})")
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], root: str) -> dict[str, str]:
    """Write report.json and report.md under ``root``; return their URIs."""
    st = storage.open_storage(root)
    json_uri = st.put_bytes("report.json", json.dumps(report, indent=2, default=str).encode())
    md_uri = st.put_bytes("report.md", render_report_markdown(report).encode())
    return {"json": json_uri, "markdown": md_uri}


def flatten(items: Iterable[Iterable[Any]]) -> list[Any]:
    return [x for it in items for x in it]


def render_sample_grid(
    paired_uri: str, out_uri: str, n: int = 4, palette: str | None = None
) -> str:
    """PNG grid of ``n`` pairs of a paired manifest, one row each: source | condition | generated.

    The condition is rendered with the palette recorded in the manifest (what the sampler saw).
    """
    import numpy as np
    from PIL import Image

    from zodi_core.conditions import render_condition
    from zodi_core.datasets.io import encode_png, read_image, read_label

    table = manifest.read_manifest(paired_uri, "transfer")
    rows = table.slice(0, n).to_pylist()
    if not rows:
        raise ValueError(f"{paired_uri}: no pairs to show")
    grid_rows = []
    for r in rows:
        generated = read_image(r["generated_uri"])
        h, w = generated.shape[:2]
        source = np.asarray(
            Image.fromarray(read_image(r["source_uri"])).resize((w, h), Image.BICUBIC)
        )
        label = read_label(r["label_uri"], r["label_format"])
        condition = render_condition(label, palette or r["palette"], (w, h))
        grid_rows.append(np.concatenate([source, condition, generated], axis=1))
    width = max(x.shape[1] for x in grid_rows)
    grid = np.concatenate(
        [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0))) for x in grid_rows], axis=0
    )
    return storage.write_bytes(out_uri, encode_png(grid))


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
