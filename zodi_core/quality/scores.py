"""Scoring a paired manifest: layout consistency and CLIP alignment of each generated image."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from zodi_core import manifest, metrics, storage
from zodi_core.conditions import resize_nearest
from zodi_core.config import QualityConfig
from zodi_core.datasets.io import encode_png, read_image, read_label
from zodi_core.model_source import folder_digest, is_local
from zodi_core.quality import clip as clip_module
from zodi_core.quality.clip import NEUTRAL_TEXT, Clip, clip_scores
from zodi_core.runs import SOURCE_ONLY
from zodi_core.seg.predict import predict_labels

SCORE_COLUMNS = ("layout_miou", "layout_pixel_acc", "clip_score", "clip_direction")


def score_digest(
    paired_uri: str,
    seg_config: str | None,
    seg_checkpoint: str | None,
    clip: str | None,
    scale: tuple[int, int] | None,
) -> str:
    """Digest of everything a score depends on: the paired manifest's bytes, the scorer's config
    file and checkpoint bytes, CLIP (a folder's content digest, or the hub id), the scale and
    the scoring code (this module, :mod:`~zodi_core.quality.clip`, :mod:`zodi_core.metrics`).
    Names the scores' storage key and is the score task's cache key."""
    h = hashlib.sha256()
    h.update(storage.read_bytes(paired_uri))
    if seg_config is not None and seg_checkpoint is not None:
        from zodi_core.seg.train import resolve_config_path

        h.update(resolve_config_path(seg_config).read_bytes())
        h.update(storage.read_bytes(seg_checkpoint))
    if clip is not None:
        h.update((folder_digest(Path(clip).expanduser()) if is_local(clip) else clip).encode())
    h.update(json.dumps(list(scale) if scale else None).encode())
    for module in (__file__, clip_module.__file__, metrics.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:16]


def scorer_checkpoint(
    quality: QualityConfig, train_mmseg_config: str, baseline: dict[str, list[dict[str, Any]]]
) -> tuple[str | None, str | None]:
    """``(mmseg config, checkpoint)`` of the layout scorer: ``quality.seg_checkpoint`` when set,
    else the run's source-only model (its first seed) from ``train_flow``'s result."""
    checkpoint = quality.seg_checkpoint or (baseline.get(SOURCE_ONLY) or [{}])[0].get("checkpoint")
    return (quality.seg_config or train_mmseg_config, checkpoint) if checkpoint else (None, None)


def score_manifest(
    paired_uri: str,
    out_uri: str,
    *,
    seg_model: Any = None,
    clip: Clip | None = None,
    batch_size: int = 8,
    scale: tuple[int, int] | None = None,
    predictions_uri: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every generated image of a paired manifest; write it with scores to ``out_uri``.

    Never regenerates an image. A model not given leaves its score columns null;
    ``kept``/``drop_reason`` are reset. ``scale``: (W, H) the segmentation model sees (None: each
    image's size). Returns ``{"uri", "rows", "scored", "mean": {column: mean}}``.
    """
    table = manifest.read_manifest(paired_uri, "transfer")
    rows = table.to_pylist()
    for r in rows:  # the scores of a model not given stay null; the filter sets kept again
        r.update(dict.fromkeys(SCORE_COLUMNS), kept=None, drop_reason=None)
    todo = [r for r in rows if r.get("generated_uri")]
    neutral = prompt_cache = None
    if clip is not None:
        neutral = clip.embed_texts([NEUTRAL_TEXT])[0]
        prompts = sorted({r["prompt"] for r in todo})
        prompt_cache = dict(zip(prompts, clip.embed_texts(prompts), strict=True)) if prompts else {}
    bar = tqdm(total=len(todo), desc="score", unit="img", disable=not progress, file=sys.stderr)
    for batch in (todo[start : start + batch_size] for start in range(0, len(todo), batch_size)):
        gen = [read_image(r["generated_uri"]) for r in batch]
        if seg_model is not None:
            for r, pred in zip(batch, predict_labels(seg_model, gen, scale), strict=True):
                label = read_label(r["label_uri"], r["label_format"])
                if pred.shape != label.shape:
                    pred = resize_nearest(pred, (label.shape[1], label.shape[0]))
                m = metrics.iou_metrics(metrics.confusion_matrix(pred, label))  # ignores 255
                r["layout_miou"], r["layout_pixel_acc"] = m["mIoU"], m["aAcc"]
                if predictions_uri:
                    key = storage.join_uri(predictions_uri, f"{r['sample_id']}.png")
                    storage.write_bytes(key, encode_png(pred))
        if clip is not None:
            src = [read_image(r["source_uri"]) for r in batch]
            g_emb, s_emb = clip.embed_images(gen), clip.embed_images(src)
            p_emb = np.stack([prompt_cache[r["prompt"]] for r in batch])
            score, direction = clip_scores(g_emb, s_emb, p_emb, neutral)
            for r, s, d in zip(batch, score, direction, strict=True):
                r.update(clip_score=float(s), clip_direction=float(d))
        bar.update(len(batch))
    bar.close()
    scored_by = {"seg": seg_model is not None, "clip": clip.source if clip is not None else None}
    meta = manifest.manifest_metadata(table) | {"scored_by": json.dumps(scored_by)}
    manifest.write_manifest(rows, out_uri, "transfer", extra_metadata=meta)
    measured = {c: [r[c] for r in rows if r[c] is not None] for c in SCORE_COLUMNS}
    return {
        "uri": out_uri,
        "rows": len(rows),
        "scored": len(todo),
        "mean": {c: round(float(np.mean(v)), 4) if v else None for c, v in measured.items()},
    }
