"""Figures and Markdown of the quality section: score histograms, the worst-N grid."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from zodi_core import manifest, storage
from zodi_core.conditions import render_condition
from zodi_core.datasets.io import decode_png, encode_png, read_image, read_label
from zodi_core.labels import NUM_CLASSES
from zodi_core.quality.scores import SCORE_COLUMNS


def score_summary(scored_uri: str) -> dict[str, Any]:
    """Means, histograms (10 bins) and drop counts of one scored manifest, for the report."""
    table = manifest.read_manifest(scored_uri, "transfer")
    out: dict[str, Any] = {"rows": table.num_rows, "columns": {}}
    for c in SCORE_COLUMNS:
        vals = np.array([v for v in table.column(c).to_pylist() if v is not None], np.float64)
        if vals.size == 0:
            continue
        lo, hi = (0.0, 100.0) if c.startswith("layout") else (-1.0, 1.0)
        counts, edges = np.histogram(vals, bins=10, range=(lo, hi))
        stats = {k: round(float(getattr(vals, k)()), 4) for k in ("mean", "min", "max")}
        hist = {"counts": counts.tolist(), "edges": [round(float(e), 3) for e in edges]}
        out["columns"][c] = {**stats, "histogram": hist}
    out["dropped"] = table.column("kept").to_pylist().count(False)
    out["reasons"] = sorted({r for r in table.column("drop_reason").to_pylist() if r})[:20]
    return out


def render_histograms_png(summaries: dict[str, dict[str, Any]]) -> bytes:
    """One row of score histograms per domain (``{domain: score_summary(...)}``), as PNG."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    domains = sorted(summaries) or ["-"]
    fig = Figure(figsize=(3 * len(SCORE_COLUMNS), 2.2 * len(domains)))
    axes = fig.subplots(len(domains), len(SCORE_COLUMNS), squeeze=False)
    for d_i, d in enumerate(domains):
        cols = summaries.get(d, {}).get("columns", {})
        for c_i, c in enumerate(SCORE_COLUMNS):
            ax = axes[d_i][c_i]
            if c in cols:
                ax.stairs(cols[c]["histogram"]["counts"], cols[c]["histogram"]["edges"], fill=True)
            ax.set_title(f"{d}: {c}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def render_worst_grid(
    scored_uri: str,
    n: int = 8,
    *,
    predictions_uri: str | None = None,
    cell: tuple[int, int] = (256, 128),
) -> tuple[bytes, list[dict[str, Any]]]:
    """The Fig. 6 grid, found automatically: one row per worst generation (lowest layout mIoU),
    columns source | condition | generated | prediction (when ``predictions_uri`` holds it),
    with its scores written over the row. Returns (PNG bytes, the rows shown)."""
    scored = manifest.read_manifest(scored_uri, "transfer").to_pylist()
    # by CLIP score when no layout was scored; nulls (not measured) left out
    column = "layout_miou" if any(r["layout_miou"] is not None for r in scored) else "clip_score"
    rows = [r for r in scored if r[column] is not None]
    rows = sorted(rows, key=lambda r: (r[column], r["sample_id"]))[:n]
    w, h = cell
    sheet = Image.new("RGB", (4 * w, max(1, len(rows)) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(rows):
        tiles = [
            read_image(r["source_uri"]),
            render_condition(read_label(r["label_uri"], r["label_format"]), r["palette"]),
            read_image(r["generated_uri"]),
        ]
        pred_uri = predictions_uri and storage.join_uri(predictions_uri, f"{r['sample_id']}.png")
        if pred_uri and storage.exists(pred_uri):
            pred = decode_png(storage.read_bytes(pred_uri), pred_uri)
            tiles.append(render_condition(np.where(pred < NUM_CLASSES, pred, 255), "cityscapes"))
        for j, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile).resize((w, h)), (j * w, i * h))
        text = f"{r['sample_id']} mIoU {fmt_score(r['layout_miou'])} acc {fmt_score(r['layout_pixel_acc'])} "
        text += f"clip {fmt_score(r['clip_score'], 3)} dir {fmt_score(r['clip_direction'], 3)}"
        draw.rectangle((0, i * h, len(text) * 6 + 4, i * h + 12), fill="black")
        draw.text((2, i * h), text, fill="white")
    return encode_png(np.asarray(sheet)), rows


def fmt_score(v: float | None, digits: int = 1) -> str:
    """A score for a table: ``digits`` decimals, ``-`` when not measured."""
    return "-" if v is None else f"{v:.{digits}f}"


def quality_images(quality: dict[str, Any]) -> list[str]:
    """URIs of the images the quality section shows: the histograms, then each worst-N grid."""
    grids = [q["worst_grid"] for _, q in sorted(quality.get("domains", {}).items())
             if q.get("worst_grid")]  # fmt: skip
    return [*([quality["histograms"]] if quality.get("histograms") else []), *grids]


def render_quality_markdown(
    quality: dict[str, Any], image_src: Callable[[str], str | None] | None = None
) -> list[str]:
    """The report's quality section (lines) from the pipeline's ``quality`` entry (``{"domains":
    {domain: apply_filter result + "summary", "worst_grid", "worst"}, "histograms": uri}``); with
    ``image_src`` (``zodi_core.report.image_sources``) images are shown, not only linked."""
    src = image_src or (lambda uri: None)
    domains = quality.get("domains", {})
    if not domains:
        return []
    lines = [
        "## Quality of the generated images",
        "",
        "| domain | rows | kept | dropped | why | layout mIoU | pixel acc | CLIP | CLIP dir |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d, q in sorted(domains.items()):
        cols = q.get("summary", {}).get("columns", {})
        means = [fmt_score(cols.get(c, {}).get("mean"), 1 if c.startswith("layout") else 3)
                 for c in SCORE_COLUMNS]  # fmt: skip
        why = ", ".join(f"{k}: {v}" for k, v in q.get("by_reason", {}).items()) or "-"
        cells = [d, q.get("rows", 0), q.get("kept", 0), q.get("dropped", 0), why, *means]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if settings := next(iter(domains.values())).get("settings"):
        lines += ["", "Filter: " + ", ".join(f"{k}={v}" for k, v in settings.items())]
    if hist := quality.get("histograms"):
        lines += ["", f"Score histograms: [{hist}]({hist})"]
        lines += ["", f"![score histograms]({src(hist)})"] if src(hist) else []
    lines += ["", "Worst generations (source | condition | generated | prediction):", ""]
    for d, q in sorted(domains.items()):
        if grid := q.get("worst_grid"):
            ids = ", ".join(
                f"{w['sample_id']} ({fmt_score(w.get('layout_miou'))})" for w in q.get("worst", [])
            )
            lines.append(f"- {d}: [{grid}]({grid}) {ids}")
            lines += ["", f"![worst generations, {d}]({src(grid)})", ""] if src(grid) else []
    lines.append("")
    return lines
