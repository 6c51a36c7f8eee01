"""Run summaries, the pipeline report (JSON + Markdown) and sample grids."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from zodi_core import layout, manifest, quality, storage


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
    lines += quality.render_quality_markdown(report.get("quality") or {})
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
    body = json.dumps(report, indent=2, default=str).encode()
    json_uri = st.put_bytes(layout.REPORT_JSON, body)
    md_uri = st.put_bytes(layout.REPORT_MD, render_report_markdown(report).encode())
    return {"json": json_uri, "markdown": md_uri}


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
