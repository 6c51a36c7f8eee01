"""Choosing a domain's strength without target images (``zodi tune-strength``): transfer a few
source images at each strength, score them, recommend the strongest that keeps the layout."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from zodi_core import layout, manifest, storage
from zodi_core.device import resolve_device
from zodi_core.quality.clip import Clip
from zodi_core.quality.figures import fmt_score
from zodi_core.quality.scores import score_manifest
from zodi_core.transfer.models import load_components
from zodi_core.transfer.runner import transfer_manifest


def recommend_strength(table: Sequence[dict[str, Any]], margin: float) -> float | None:
    """The strongest strength whose mean layout mIoU stays within ``margin`` points of the
    lowest strength's (the most domain change that still keeps the layout); None without
    layout scores."""
    rows = sorted(
        (r for r in table if r.get("layout_miou") is not None), key=lambda r: r["strength"]
    )
    if not rows:
        return None
    floor = rows[0]["layout_miou"] - margin
    return max(r["strength"] for r in rows if r["layout_miou"] >= floor)


def tune_strength(
    samples_uri: str,
    config: Any,
    strengths: Sequence[float],
    out_root: str,
    *,
    n: int = 8,
    seg_model: Any = None,
    clip: Clip | None = None,
    margin: float = 5.0,
    scale: tuple[int, int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Transfer the first ``n`` samples (by id) at each strength, score them, recommend one.

    ``samples_uri``: the source val split. Returns ``{"rows": [{strength, means...}],
    "recommended", "margin", "plot", "table", ...}``.
    """
    if n < 1:
        raise ValueError(f"n: expected an integer >= 1, received {n}")
    ids = sorted(manifest.read_manifest(samples_uri, "samples").column("sample_id").to_pylist())
    if not ids:
        raise ValueError(f"{samples_uri}: the samples manifest is empty (0 rows)")
    ids = ids[:n]
    components = load_components(config.models, *resolve_device(config.device, config.dtype))
    domain = config.domain
    config = config.resolved()  # once, here: the sweep's strength wins over the domain's
    table = []
    for s in sorted(strengths):
        cfg = config.replace(strength=float(s))
        key = layout.tune_key(domain, f"strength-{s:g}")
        res = transfer_manifest(
            samples_uri, cfg, out_root, sample_ids=ids, components=components,
            manifest_uri=storage.join_uri(out_root, f"{key}.parquet"), progress=progress,
        )  # fmt: skip
        if res.failed:
            first = next(iter(res.errors.items()), ("?", "?"))
            raise RuntimeError(f"strength {s:g}: {res.failed} images failed (first: {first})")
        scored = score_manifest(
            res.manifest_uri, storage.join_uri(out_root, f"{key}-scored.parquet"),
            seg_model=seg_model, clip=clip, scale=scale,
        )  # fmt: skip
        table.append({"strength": float(s), "images": scored["scored"], **scored["mean"]})
    recommended = recommend_strength(table, margin)
    plot = storage.write_bytes(
        storage.join_uri(out_root, layout.tune_key(domain, "tune.png")),
        render_tune_png(table, recommended, domain),
    )
    md = render_tune_markdown(table, recommended, margin, domain)
    table_uri = storage.write_bytes(
        storage.join_uri(out_root, layout.tune_key(domain, "tune.md")), md.encode()
    )
    return {
        "domain": domain,
        "samples": ids,
        "rows": table,
        "recommended": recommended,
        "margin": margin,
        "plot": plot,
        "table": table_uri,
    }


def render_tune_markdown(
    table: Sequence[dict[str, Any]], recommended: float | None, margin: float, domain: str
) -> str:
    """The tune-strength table (Markdown) with the recommendation and its rule."""
    lines = [
        f"# Strength for {domain}: layout consistency vs prompt alignment",
        "",
        "| strength | images | layout mIoU | pixel acc | CLIP score | CLIP direction |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        mark = " **(recommended)**" if r["strength"] == recommended else ""
        lines.append(
            f"| {r['strength']:g}{mark} | {r['images']} | {fmt_score(r.get('layout_miou'))} | "
            f"{fmt_score(r.get('layout_pixel_acc'))} | {fmt_score(r.get('clip_score'), 3)} | "
            f"{fmt_score(r.get('clip_direction'), 3)} |"
        )
    rule = (
        f"Recommended: {recommended:g}, the strongest strength whose layout mIoU stays within "
        f"{margin:g} points of the lowest strength's."
        if recommended is not None
        else "No recommendation: no layout scores (give a segmentation model)."
    )
    return "\n".join([*lines, "", rule, ""])


def render_tune_png(
    table: Sequence[dict[str, Any]], recommended: float | None, domain: str
) -> bytes:
    """Layout mIoU (x) against CLIP directional similarity (y; CLIP score without it; strength
    when there is no CLIP), one point per strength, the recommended one circled."""
    from matplotlib.figure import Figure  # no pyplot: no global figure, nothing to close

    ykey = next(
        (k for k in ("clip_direction", "clip_score") if any(r.get(k) is not None for r in table)),
        "strength",
    )
    xs = [
        r.get("layout_miou") if r.get("layout_miou") is not None else r["strength"] for r in table
    ]
    ys = [r.get(ykey) if r.get(ykey) is not None else 0.0 for r in table]
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(xs, ys, "o-")
    for x, y, r in zip(xs, ys, table, strict=True):
        ax.annotate(f"{r['strength']:g}", (x, y), textcoords="offset points", xytext=(4, 4))
        if r["strength"] == recommended:
            ax.plot([x], [y], "o", ms=14, mfc="none", mec="red")
    has_layout = any(r.get("layout_miou") is not None for r in table)
    ax.set_xlabel("layout mIoU (%)" if has_layout else "strength")
    ax.set_ylabel(ykey)
    ax.set_title(f"{domain}: layout vs prompt alignment per strength", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
