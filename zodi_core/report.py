"""Run summaries, the pipeline report (JSON + Markdown), sample grids, and the images of the
report's Prefect artifacts (presigned links or embedded data URIs; tasks/report.py publishes them).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from zodi_core import layout, manifest, storage
from zodi_core.conditions import render_condition, resize_image
from zodi_core.config import ReportConfig
from zodi_core.datasets.io import encode_png, read_image, read_label
from zodi_core.labels import CLASSES
from zodi_core.quality.figures import quality_images, render_quality_markdown


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

    def line(self) -> str:
        return (
            f"shards: {len(self.shards_computed)} computed, {len(self.shards_cached)} cached, "
            f"{len(self.shards_failed)} failed; images: {self.images_written} written, "
            f"{self.images_skipped} skipped, {self.images_failed} failed"
        )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _table(title: str, header: list[str], rows: list[Iterable[Any]]) -> list[str]:
    """A Markdown section: ``## title`` and a table of ``header`` and ``rows`` (none: no rows)."""
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(map(str, row)) + " |" for row in rows), ""] if rows else []


def render_report_markdown(
    report: dict[str, Any], image_src: Callable[[str], str | None] | None = None
) -> str:
    """Markdown report: mIoU per target, proxy estimates, shard status, sample grids and
    confusion matrices; ``image_src`` (see :func:`image_sources`) or images are links."""
    lines = ["# ZoDi pipeline report", ""]
    if report.get("note"):
        lines += [f"> {report['note']}", ""]
    results = report.get("results", {})
    targets = sorted({t for r in results.values() for t in r.get("targets", {})})
    rows = [
        [name, *(_pct(res.get("targets", {}).get(t, {}).get("mIoU")) for t in targets)]
        for name, res in results.items()
    ]
    lines += _table("mIoU (%) per target", ["model", *targets], rows)
    proxies = [
        [name, domain, _pct(p.get("mIoU")), _pct(p.get("real_mIoU"))]
        for name, r in results.items()
        for domain, p in (r.get("proxy") or {}).items()
    ]
    title = "Proxy estimate (generated target-like images of the source val split)"
    lines += _table(title, ["model", "domain", "proxy mIoU", "real target mIoU"], proxies)
    header = "domain, shards computed, cached, failed, images written, skipped, failed"
    rows = [
        [domain, *(len(s[f"shards_{k}"]) for k in ("computed", "cached", "failed"))]
        + [s[f"images_{k}"] for k in ("written", "skipped", "failed")]
        for domain, s in report.get("transfer", {}).items()
    ]
    lines += _table("Transfer", header.split(", "), rows)
    lines += render_quality_markdown(report.get("quality") or {}, image_src)
    src = image_src or (lambda uri: None)
    grids = list(report.get("sample_grids", {}).items())
    lines += _figures("Sample grids (source | condition | generated)", grids, src)
    title = "Confusion matrices (rows: label, columns: prediction; row-normalised)"
    return "\n".join(lines + _figures(title, _confusion_pngs(report), src))


def _confusion_pngs(report: dict[str, Any]) -> list[tuple[str, str]]:
    """``(model · target, uri)`` of every confusion matrix of the report's evaluations."""
    return [
        (f"{model} · {target}", e["confusion_png"])
        for model, targets in (report.get("evaluations") or {}).items()
        for target, e in targets.items()
        if e.get("confusion_png")
    ]


def _figures(title: str, figures: list[tuple[str, str]], src: Callable) -> list[str]:
    """A ``## title`` section (none without figures): each a titled image (when the browser has
    a ``src(uri)`` for it) and a link to the stored file."""
    lines = [f"## {title}", ""] if figures else []
    for name, uri in figures:
        if (image := src(uri)) is None:
            lines += [f"- {name}: [{uri}]({uri})", ""]
        else:
            lines += [f"**{name}** ([{uri}]({uri}))", "", f"![{name}]({image})", ""]
    return lines


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
    """PNG grid of ``n`` pairs of a paired manifest, one row each: source | condition | generated
    (the condition in the manifest's palette, what the sampler saw)."""
    table = manifest.read_manifest(paired_uri, "transfer")
    rows = table.slice(0, n).to_pylist()
    if not rows:
        raise ValueError(f"{paired_uri}: no pairs to show")
    grid_rows = []
    for r in rows:
        generated = read_image(r["generated_uri"])
        h, w = generated.shape[:2]
        source = resize_image(read_image(r["source_uri"]), (w, h))
        label = read_label(r["label_uri"], r["label_format"])
        condition = render_condition(label, palette or r["palette"], (w, h))
        grid_rows.append(np.concatenate([source, condition, generated], axis=1))
    width = max(x.shape[1] for x in grid_rows)
    grid = np.concatenate(
        [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0))) for x in grid_rows], axis=0
    )
    return storage.write_bytes(out_uri, encode_png(grid))


# -- evaluation details for the report -------------------------------------------------------


def read_evaluations(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {target: {"confusion_png", "mIoU", "per_class"}}}`` from the ``report_jsons``
    of what ``evaluate_flow`` returns."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, entry in results.items():
        for uri in entry.get("report_jsons", []):
            saved = json.loads(storage.read_bytes(uri))
            for target, t in saved["targets"].items():
                out.setdefault(model, {})[target] = {
                    "confusion_png": t.get("confusion_png"),
                    "mIoU": t["summary"].get("mIoU"),
                    "per_class": t["summary"]["per_class"],
                }
    return out


def report_images(report: dict[str, Any]) -> list[str]:
    """URIs of the images the report shows: sample grids, confusion matrices, then the quality
    section's histograms and worst-N grids."""
    return [
        *report.get("sample_grids", {}).values(),
        *(uri for _, uri in _confusion_pngs(report)),
        *quality_images(report.get("quality") or {}),
    ]


def per_class_rows(evaluations: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per class, one column per ``<model> / <target>``: IoU in %, None when the class
    is absent from labels and predictions; a last row holds the mIoU."""
    columns = {
        f"{model} / {target}": e
        for model, targets in evaluations.items()
        for target, e in targets.items()
    }
    if not columns:
        return []
    rows = [{"class": c, **{k: e["per_class"].get(c) for k, e in columns.items()}} for c in CLASSES]
    return [*rows, {"class": "mIoU", **{k: e.get("mIoU") for k, e in columns.items()}}]


# -- images for the artifacts ------------------------------------------------------------------

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: JPEG qualities and scales tried, in order, until an embedded image fits its budget.
_JPEG_QUALITIES = (85, 70, 55, 40)
_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...``: an image a browser shows without fetching anything."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def encode_for_embedding(data: bytes, max_chars: int) -> tuple[bytes, str] | None:
    """Re-encode an image so its data URI has at most ``max_chars`` characters: ``(bytes,
    mime)`` or None. A PNG that fits is kept (the confusion matrices' labels stay sharp)."""
    if data.startswith(_PNG_MAGIC) and len(data_uri(data, "image/png")) <= max_chars:
        return data, "image/png"
    with Image.open(io.BytesIO(data)) as im:
        rgba = im.convert("RGBA")  # JPEG has no alpha: transparent pixels go on white
    image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    w, h = image.size
    for scale in _SCALES:
        size = (round(w * scale), round(h * scale))
        if min(size) < 32 and scale < 1.0:
            break
        small = image if scale == 1.0 else image.resize(size, Image.LANCZOS)
        for quality_ in _JPEG_QUALITIES:
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=quality_, optimize=True)
            if len(data_uri(buf.getvalue(), "image/jpeg")) <= max_chars:
                return buf.getvalue(), "image/jpeg"
    return None


def image_sources(
    uris: Iterable[str], config: ReportConfig | None = None
) -> tuple[dict[str, str], list[str]]:
    """What a browser can load for each stored image, per ``config.images``: ``({uri: src},
    problems)``; an image without ``src`` is shown as a link and ``problems`` says why.

    The embedded images of one call share ``config.embed_max_kb`` equally.
    """
    config = config or ReportConfig()
    sources: dict[str, str] = {}
    problems: list[str] = []
    to_embed: list[str] = []
    presign = config.images != "embedded"
    for uri in dict.fromkeys(uris):
        try:
            url = storage.url_for(uri, config.presign_expires_s) if presign else None
        except storage.StorageError as err:
            problems.append(f"{uri}: no presigned link ({err})")
            continue
        if url is not None:
            sources[uri] = url
        elif config.images != "presigned":  # auto: no link (a local file), so embedded
            to_embed.append(uri)
    share = config.embed_max_kb * 1000 // max(len(to_embed), 1)
    for uri in to_embed:
        try:
            encoded = encode_for_embedding(storage.read_bytes(uri), share)
        except (OSError, storage.StorageError) as err:  # PIL's UnidentifiedImageError is an OSError
            problems.append(f"{uri}: not embedded ({err})")
            continue
        if encoded is None:
            problems.append(
                f"{uri}: not embedded (does not fit {share} characters of "
                f"ReportConfig.embed_max_kb={config.embed_max_kb} shared by {len(to_embed)} images)"
            )
            continue
        sources[uri] = data_uri(*encoded)
    return sources, problems
