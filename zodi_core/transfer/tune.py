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
        (r["strength"], r["layout_miou"]) for r in table if r.get("layout_miou") is not None
    )
    if not rows:
        return None
    return max(s for s, miou in rows if miou >= rows[0][1] - margin)


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
    ids = sorted(manifest.read_manifest(samples_uri, "samples").column("sample_id").to_pylist())[:n]
    if not ids:
        raise ValueError(f"{samples_uri}: the samples manifest is empty (0 rows)")
    components = load_components(config.models, *resolve_device(config.device, config.dtype))
    domain = config.domain
    config = config.resolved()  # once, here: the sweep's strength wins over the domain's

    def uri(name: str) -> str:
        return storage.join_uri(out_root, layout.tune_key(domain, name))

    table = []
    for s in sorted(strengths):
        res = transfer_manifest(
            samples_uri, config.replace(strength=float(s)), out_root, sample_ids=ids,
            components=components, manifest_uri=uri(f"strength-{s:g}.parquet"), progress=progress,
        )  # fmt: skip
        if res.failed:
            first = next(iter(res.errors.items()), ("?", "?"))
            raise RuntimeError(f"strength {s:g}: {res.failed} images failed (first: {first})")
        scored = score_manifest(
            res.manifest_uri, uri(f"strength-{s:g}-scored.parquet"),
            seg_model=seg_model, clip=clip, scale=scale,
        )  # fmt: skip
        table.append({"strength": float(s), "images": scored["scored"], **scored["mean"]})
    recommended = recommend_strength(table, margin)
    md = render_tune_markdown(table, recommended, margin, domain)
    return {
        "domain": domain,
        "samples": ids,
        "rows": table,
        "recommended": recommended,
        "margin": margin,
        "plot": storage.write_bytes(uri("tune.png"), render_tune_png(table, recommended, domain)),
        "table": storage.write_bytes(uri("tune.md"), md.encode()),
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
    digits = {"layout_miou": 1, "layout_pixel_acc": 1, "clip_score": 3, "clip_direction": 3}
    for r in table:
        mark = " **(recommended)**" if r["strength"] == recommended else ""
        scores = " | ".join(fmt_score(r.get(k), d) for k, d in digits.items())
        lines.append(f"| {r['strength']:g}{mark} | {r['images']} | {scores} |")
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

    # each axis: its first score measured at all (the sweep scores every strength alike)
    xkey, ykey = (
        next((k for k in keys if any(r.get(k) is not None for r in table)), "strength")
        for keys in (("layout_miou",), ("clip_direction", "clip_score"))
    )
    xs, ys = ([r.get(k) or 0.0 for r in table] for k in (xkey, ykey))
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(xs, ys, "o-")
    for x, y, r in zip(xs, ys, table, strict=True):
        ax.annotate(f"{r['strength']:g}", (x, y), textcoords="offset points", xytext=(4, 4))
        if r["strength"] == recommended:
            ax.plot([x], [y], "o", ms=14, mfc="none", mec="red")
    ax.set_xlabel("layout mIoU (%)" if xkey == "layout_miou" else "strength")
    ax.set_ylabel(ykey)
    ax.set_title(f"{domain}: layout vs prompt alignment per strength", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
