"""Quality tasks: score a domain's generated images (cached), flag the rows to drop, figures."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from tasks._cache import cache_key, cached_task, run_fresh
from tasks._policy import IO_RETRIES
from tasks.artifacts import publish_table
from zodi_core import layout, storage
from zodi_core.config import QualityConfig
from zodi_core.device import resolve_device
from zodi_core.evaluation import load_model
from zodi_core.quality import figures, filtering, scores
from zodi_core.quality.clip import load_clip


def _score_cache_key(context: TaskRunContext | None, p: dict[str, Any]) -> str:
    # Same manifest, scorer, CLIP and code give the same scores (a content-addressed file).
    return cache_key("score", p["domain"], p["digest"])


@cached_task(_score_cache_key, task_run_name="score-{domain}", **IO_RETRIES)
def score_paired_task(
    paired_uri: str,
    domain: str,
    root: str,
    seg_config: str | None,
    seg_checkpoint: str | None,
    quality_config: QualityConfig,
    scale: tuple[int, int] | None,
    digest: str,
) -> dict[str, Any]:
    """Score one domain's paired manifest (never makes an image); return the scores manifest URI,
    the predictions folder and the mean scores."""
    device = str(resolve_device(quality_config.device, "float32", auto_half=False)[0])
    seg_model = (
        load_model(seg_config, seg_checkpoint, device) if seg_config and seg_checkpoint else None
    )
    clip = load_clip(quality_config.clip, device) if quality_config.clip else None
    pred_uri = layout.uri(root, layout.predictions_key(domain, digest)) if seg_model else None
    out = scores.score_manifest(
        paired_uri,
        layout.uri(root, layout.scores_key(domain, digest)),
        seg_model=seg_model,
        clip=clip,
        batch_size=quality_config.batch_size,
        scale=scale,
        predictions_uri=pred_uri,
    )
    return {**out, "domain": domain, "digest": digest, "predictions_uri": pred_uri}


def score_paired_cached(
    paired_uri: str,
    domain: str,
    root: str,
    seg_config: str | None,
    seg_checkpoint: str | None,
    quality_config: QualityConfig,
    scale: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Run :func:`score_paired_task` (inside a flow); a cache record counts only while its scores
    file exists."""
    digest = scores.score_digest(paired_uri, seg_config, seg_checkpoint, quality_config.clip, scale)
    args = (paired_uri, domain, root, seg_config, seg_checkpoint, quality_config, scale, digest)
    return run_fresh(score_paired_task, "uri", *args)


@task(**IO_RETRIES)
def filter_paired_task(
    scored: dict[str, Any], root: str, quality_config: QualityConfig
) -> dict[str, Any]:
    """Flag a domain's scored rows (never deleting one) and write its training manifest (the kept
    rows); add the summary and the worst-N grid. Cheap, so not cached: settings may change."""
    domain = scored["domain"]
    out = filtering.apply_filter(
        scored["uri"],
        layout.uri(root, layout.paired_manifest_key(domain, "scored")),
        layout.uri(root, layout.paired_manifest_key(domain, "train")),
        min_layout_miou=quality_config.min_layout_miou,
        min_clip=quality_config.min_clip,
        drop_lowest_fraction=quality_config.drop_lowest_fraction,
    )
    out["summary"] = figures.score_summary(out["uri"])
    if quality_config.worst_n:
        png, worst = figures.render_worst_grid(
            out["uri"], quality_config.worst_n, predictions_uri=scored.get("predictions_uri")
        )
        if worst:
            out["worst_grid"] = storage.write_bytes(layout.quality_grid_uri(root, domain), png)
            keep = ("sample_id", *scores.SCORE_COLUMNS, "drop_reason")
            out["worst"] = [{k: w[k] for k in keep} for w in worst]
    return out


@task(**IO_RETRIES)
def quality_figures_task(filtered: dict[str, dict[str, Any]], root: str) -> dict[str, Any]:
    """The report's quality entry: per-domain filter results and one histogram PNG; the worst
    generations as a table artifact (publishing it never fails the task)."""
    summaries = {d: f["summary"] for d, f in filtered.items()}
    png = figures.render_histograms_png(summaries)
    worst = [{"domain": d, **w} for d, f in sorted(filtered.items()) for w in f.get("worst", [])]
    publish_table("quality", worst, root, "worst generations (lowest layout mIoU)")
    return {
        "domains": filtered,
        "histograms": storage.write_bytes(layout.quality_histograms_uri(root), png),
    }
