"""Quality control of generated images: per-image scores, the training filter, failure grids.

Two kinds of score per generated image (issue 14), stored in the transfer-schema columns
``layout_miou``, ``layout_pixel_acc``, ``clip_score``, ``clip_direction``:

- **layout consistency**: a segmentation model (any mmseg config + checkpoint; in the pipeline the
  run's own source-only model) predicts on the generated image; mIoU and pixel accuracy (percent)
  of that prediction against the *source* label. A generation that adds, loses or deforms objects
  (the paper's Fig. 6) no longer fits its label and scores low.
- **prompt alignment** (CLIP): ``clip_score`` = cos(E_img(generated), E_txt(prompt)), and
  ``clip_direction`` = cos(E_img(generated) - E_img(source), E_txt(prompt) - E_txt("driving")):
  did the image move from the source towards the domain the prompt names (the directional CLIP
  similarity of StyleGAN-NADA / InstructPix2Pix), independent of how "prompt-like" the source is.

The filter (:func:`apply_filter`) never deletes a row: it sets ``kept`` and ``drop_reason``; the
training manifest is the kept rows (:func:`kept_rows`). Nothing here imports Prefect.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from zodi_core import manifest, storage
from zodi_core.config import CLIP_MODEL_ID, QualityConfig
from zodi_core.labels import IGNORE_INDEX, NUM_CLASSES

#: The neutral text the directional score starts from (the prompts are "driving <domain>...").
NEUTRAL_TEXT = "driving"
SCORE_COLUMNS = ("layout_miou", "layout_pixel_acc", "clip_score", "clip_direction")


# ---------------------------------------------------------------------------------------------
# Layout consistency
# ---------------------------------------------------------------------------------------------


def layout_scores(pred: np.ndarray, label: np.ndarray) -> tuple[float | None, float | None]:
    """``(mIoU %, pixel accuracy %)`` of one prediction against its label.

    Args:
        pred: (H, W) integer train ids 0..18.
        label: (H, W) integer train ids 0..18, 255 = ignore.
    Returns:
        mIoU over the classes present in the label or the prediction (on labelled pixels), as
        MMSeg's per-dataset mIoU leaves out classes with an empty union; None for both when the
        label has no labelled pixel.
    """
    pred = np.asarray(pred).astype(np.int64)
    label = np.asarray(label).astype(np.int64)
    if pred.shape != label.shape:
        raise ValueError(f"pred: expected the label's shape {label.shape}, received {pred.shape}")
    valid = label != IGNORE_INDEX
    if not valid.any():
        return None, None
    p, t = pred[valid], label[valid]
    inter = np.bincount(t[p == t], minlength=NUM_CLASSES)[:NUM_CLASSES]
    area_p = np.bincount(p, minlength=NUM_CLASSES)[:NUM_CLASSES]
    area_t = np.bincount(t, minlength=NUM_CLASSES)[:NUM_CLASSES]
    union = area_p + area_t - inter
    present = union > 0
    miou = float((inter[present] / union[present]).mean()) * 100
    acc = float((p == t).mean()) * 100
    return miou, acc


# ---------------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------------


@dataclass
class Clip:
    """A CLIP model with its tokenizer and image processor, on one device."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any  # transformers.CLIPTokenizer
    image_processor: Any  # transformers.CLIPImageProcessor
    source: str

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float64 image embeddings (projected, not normalised) of (H, W, 3) uint8 RGB."""
        import torch

        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=pixels.to(self.device))
        return _features(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float64 text embeddings (projected, not normalised)."""
        import torch

        tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device),
            )
        return _features(out)


def _features(out: Any) -> np.ndarray:
    # transformers >= 5 returns a model output whose pooler_output is the projected embedding
    tensor = out if hasattr(out, "detach") else out.pooler_output
    return tensor.detach().float().cpu().numpy().astype(np.float64)


def load_clip(source: str = CLIP_MODEL_ID, device: str = "cpu") -> Clip:  # default: config's
    """Load CLIP from a hub id or a local folder (``save_pretrained`` layout)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    local = Path(source).is_dir()
    if not local and (source.startswith((".", "/")) or Path(source).exists()):
        raise FileNotFoundError(f"quality.clip {source}: not a folder; give a hub id or a folder")
    kw = {"local_files_only": True} if local else {}
    model = CLIPModel.from_pretrained(source, **kw).to(device).eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(source, **kw)
    processor = CLIPImageProcessor.from_pretrained(source, **kw)
    return Clip(model, tokenizer, processor, source)


def build_tiny_clip(seed: int = 0) -> Clip:
    """A random-weight CLIP with the real architecture, shrunk (32 px images, 16-d embeddings),
    and the offline byte-level tokenizer of the tiny diffusion models. For tests and the demo."""

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from zodi_core.transfer.models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    vocab = tokenizer.get_vocab()
    ids = {k: vocab[t] for k, t in (("bos", "<|startoftext|>"), ("eos", "<|endoftext|>"))}
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"],
            pad_token_id=ids["eos"],
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config).eval().requires_grad_(False)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return Clip(model, tokenizer, processor, "tiny")


def write_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """Write :func:`build_tiny_clip` as a folder :func:`load_clip` reads like real weights."""
    out = Path(out_dir)
    clip = build_tiny_clip(seed)
    out.mkdir(parents=True, exist_ok=True)
    clip.model.save_pretrained(out)
    clip.tokenizer.save_pretrained(out)
    clip.image_processor.save_pretrained(out)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def clip_scores(
    generated: np.ndarray, source: np.ndarray, prompt: np.ndarray, neutral: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(clip_score, clip_direction)``, each (N,) float64 in [-1, 1].

    Args:
        generated, source: (N, D) image embeddings of the generated images and their sources.
        prompt: (N, D) or (D,) text embeddings of each row's prompt.
        neutral: (D,) text embedding of :data:`NEUTRAL_TEXT`.
    """
    prompt = np.broadcast_to(prompt, generated.shape)
    score = np.sum(_unit(generated) * _unit(prompt), axis=-1)
    d_img = _unit(_unit(generated) - _unit(source))
    d_txt = _unit(_unit(prompt) - _unit(np.broadcast_to(neutral, generated.shape)))
    return score, np.sum(d_img * d_txt, axis=-1)


# ---------------------------------------------------------------------------------------------
# Scoring a paired manifest
# ---------------------------------------------------------------------------------------------


def score_digest(
    paired_uri: str,
    seg_config: str | None,
    seg_checkpoint: str | None,
    clip: str | None,
    scale: tuple[int, int] | None,
) -> str:
    """Digest of everything a score depends on: the paired manifest's bytes, the scorer's config
    file and checkpoint bytes, CLIP (a folder's content digest, or the hub id), the scale and
    this module's code. Names the scores' storage key and is the score task's cache key."""
    import hashlib

    h = hashlib.sha256()
    h.update(storage.read_bytes(paired_uri))
    if seg_config is not None and seg_checkpoint is not None:
        from zodi_core.seg.train import resolve_config_path

        h.update(resolve_config_path(seg_config).read_bytes())
        h.update(storage.read_bytes(seg_checkpoint))
    if clip is not None:
        h.update((_folder_fingerprint(Path(clip)) if Path(clip).is_dir() else clip).encode())
    h.update(json.dumps(list(scale) if scale else None).encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def _folder_fingerprint(root: Path, edge: int = 1 << 20) -> str:
    """Digest of a local model folder: every file's name, size, first and last MiB. Unlike a
    config-and-sizes digest it tells apart two weight files of one architecture (two seeds, a
    fine-tune); unlike a full hash it costs 2 MiB per file, not gigabytes."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        size = p.stat().st_size
        h.update(f"{p.relative_to(root).as_posix()}\0{size}\0".encode())
        with p.open("rb") as f:
            h.update(f.read(edge))
            if size > 2 * edge:
                f.seek(size - edge)
                h.update(f.read(edge))
    return h.hexdigest()[:16]


def scorer_checkpoint(
    quality: QualityConfig, train_mmseg_config: str, baseline: dict[str, list[dict[str, Any]]]
) -> tuple[str | None, str | None]:
    """``(mmseg config, checkpoint)`` of the layout scorer: ``quality.seg_checkpoint`` when set,
    else the run's source-only model (its first seed) from ``train_flow``'s result."""
    from zodi_core.runs import SOURCE_ONLY

    config = quality.seg_config or train_mmseg_config
    if quality.seg_checkpoint:
        return config, quality.seg_checkpoint
    results = baseline.get(SOURCE_ONLY) or []
    if not results or not results[0].get("checkpoint"):
        return None, None
    return config, results[0]["checkpoint"]


def _read_rgb(uri: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
        return np.asarray(im.convert("RGB"))


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


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
    """Score every generated image of a paired (transfer) manifest; write it with scores.

    Reads images only (a score never regenerates one). Rows keep every column; the score
    columns of a model that is not given stay null; ``kept``/``drop_reason`` are reset (the
    filter sets them).

    Args:
        paired_uri: the paired manifest (rows with ``generated_uri``).
        out_uri: where the scored manifest goes (transfer schema).
        seg_model: an mmseg model in eval mode (:func:`zodi_core.evaluation.load_model`).
        clip: a :class:`Clip` (:func:`load_clip`).
        batch_size: images per CLIP forward pass.
        scale: (W, H) the segmentation model sees; None: each image's own size.
        predictions_uri: a folder to write each prediction (``<sample_id>.png``, train ids) to,
            for failure grids; None: not written.
        progress: a progress bar on stderr.
    Returns:
        ``{"uri", "rows", "scored", "mean": {column: mean}}``.
    """
    from tqdm import tqdm

    from zodi_core.datasets.io import read_label

    table = manifest.read_manifest(paired_uri, "transfer")
    rows = table.to_pylist()
    todo = [i for i, r in enumerate(rows) if r.get("generated_uri")]
    scores: dict[str, list[float | None]] = {c: [None] * len(rows) for c in SCORE_COLUMNS}
    neutral = prompt_cache = None
    if clip is not None:
        neutral = clip.embed_texts([NEUTRAL_TEXT])[0]
        prompts = sorted({rows[i]["prompt"] for i in todo})
        prompt_cache = dict(zip(prompts, clip.embed_texts(prompts), strict=True)) if prompts else {}
    bar = tqdm(total=len(todo), desc="score", unit="img", disable=not progress, file=sys.stderr)
    for batch in _batches(todo, max(1, batch_size)):
        gen = [_read_rgb(rows[i]["generated_uri"]) for i in batch]
        if seg_model is not None:
            for i, pred in zip(batch, predict_labels(seg_model, gen, scale), strict=True):
                r = rows[i]
                label = read_label(r["label_uri"], r["label_format"])
                if pred.shape != label.shape:
                    from zodi_core.conditions import resize_nearest

                    pred = resize_nearest(pred, (label.shape[1], label.shape[0]))
                miou, acc = layout_scores(pred, label)
                scores["layout_miou"][i], scores["layout_pixel_acc"][i] = miou, acc
                if predictions_uri:
                    key = storage.join_uri(predictions_uri, f"{r['sample_id']}.png")
                    storage.write_bytes(key, _png(pred))
        if clip is not None:
            src = [_read_rgb(rows[i]["source_uri"]) for i in batch]
            g_emb, s_emb = clip.embed_images(gen), clip.embed_images(src)
            p_emb = np.stack([prompt_cache[rows[i]["prompt"]] for i in batch])
            score, direction = clip_scores(g_emb, s_emb, p_emb, neutral)
            for j, i in enumerate(batch):
                scores["clip_score"][i] = float(score[j])
                scores["clip_direction"][i] = float(direction[j])
        bar.update(len(batch))
    bar.close()
    for r_i, r in enumerate(rows):
        for c in SCORE_COLUMNS:
            r[c] = scores[c][r_i]
        r["kept"], r["drop_reason"] = None, None
    meta = manifest.manifest_metadata(table)
    meta["scored_by"] = json.dumps(
        {"seg": seg_model is not None, "clip": clip.source if clip is not None else None}
    )
    manifest.write_manifest(rows, out_uri, "transfer", extra_metadata=meta)
    return {
        "uri": out_uri,
        "rows": len(rows),
        "scored": len(todo),
        "mean": {c: _mean(scores[c]) for c in SCORE_COLUMNS},
    }


def predict_labels(
    model: Any, images: Sequence[np.ndarray], scale: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """(H, W) uint8 train ids of each (H, W, 3) uint8 RGB image, one forward pass per batch of
    images that share a size (all of them with ``scale`` (W, H)), each resized back to its image's
    size; the batched twin of :func:`zodi_core.seg.predict.predict_label`."""
    import mmcv
    import torch
    from mmseg.datasets.transforms import PackSegInputs

    pack = PackSegInputs(meta_keys=("img_shape", "ori_shape"))
    groups: dict[tuple[int, ...], list[int]] = {}
    inputs = []
    for i, rgb in enumerate(images):
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        img = mmcv.imresize(bgr, scale, interpolation="bilinear") if scale else bgr
        inputs.append(pack({"img": img, "img_shape": img.shape[:2], "ori_shape": img.shape[:2]}))
        groups.setdefault(img.shape, []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    for idx in groups.values():
        batch = {
            "inputs": [inputs[i]["inputs"] for i in idx],
            "data_samples": [inputs[i]["data_samples"] for i in idx],
        }
        with torch.no_grad():
            results = model.test_step(batch)
        for i, res in zip(idx, results, strict=True):
            pred = res.pred_sem_seg.data.squeeze(0).cpu().numpy().astype(np.uint8)
            h, w = images[i].shape[:2]
            if pred.shape != (h, w):
                pred = mmcv.imresize(pred, (w, h), interpolation="nearest")
            out[i] = pred
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(vals)), 4) if vals else None


# ---------------------------------------------------------------------------------------------
# The filter
# ---------------------------------------------------------------------------------------------


def filter_reasons(
    rows: Sequence[dict[str, Any]],
    *,
    min_layout_miou: float | None = None,
    min_clip: float | None = None,
    drop_lowest_fraction: float = 0.0,
) -> list[list[str]]:
    """The reasons each row is dropped (empty: kept), one list per row, in row order.

    - ``layout_miou < min_layout_miou`` and ``clip_score < min_clip`` (a null score never fails
      a threshold: it was not measured);
    - ``lowest <f> layout``: the ``floor(f * rows)`` rows with the lowest ``layout_miou`` (rows
      without one are not ranked), whatever the thresholds; ties broken by ``sample_id``.
    """
    if not 0.0 <= drop_lowest_fraction < 1.0:
        raise ValueError(
            f"quality.drop_lowest_fraction: expected a number in [0, 1), received "
            f"{drop_lowest_fraction}"
        )
    reasons: list[list[str]] = [[] for _ in rows]
    for r, out in zip(rows, reasons, strict=True):
        miou, clip = r.get("layout_miou"), r.get("clip_score")
        if min_layout_miou is not None and miou is not None and miou < min_layout_miou:
            out.append(f"layout_miou {miou:.1f} < {min_layout_miou:g}")
        if min_clip is not None and clip is not None and clip < min_clip:
            out.append(f"clip_score {clip:.3f} < {min_clip:g}")
    n_drop = math.floor(drop_lowest_fraction * len(rows))
    if n_drop:
        ranked = sorted(
            (i for i, r in enumerate(rows) if r.get("layout_miou") is not None),
            key=lambda i: (rows[i]["layout_miou"], rows[i]["sample_id"]),
        )
        for i in ranked[:n_drop]:
            reasons[i].append(f"lowest {drop_lowest_fraction:g} layout")
    return reasons


def apply_filter(
    scored_uri: str,
    out_uri: str,
    train_uri: str,
    *,
    min_layout_miou: float | None = None,
    min_clip: float | None = None,
    drop_lowest_fraction: float = 0.0,
) -> dict[str, Any]:
    """Flag the rows of a scored manifest; write every row (``out_uri``) and the kept rows
    (``train_uri``, what training reads). Returns the counts and the drops by reason."""
    table = manifest.read_manifest(scored_uri, "transfer")
    rows = table.to_pylist()
    reasons = filter_reasons(
        rows,
        min_layout_miou=min_layout_miou,
        min_clip=min_clip,
        drop_lowest_fraction=drop_lowest_fraction,
    )
    by_reason: dict[str, int] = {}
    for r, why in zip(rows, reasons, strict=True):
        r["kept"] = not why
        r["drop_reason"] = "; ".join(why) or None
        for w in why:
            kind = w.split(" ")[0] if not w.startswith("lowest") else "lowest_fraction"
            by_reason[kind] = by_reason.get(kind, 0) + 1
    kept = [r for r in rows if r["kept"]]
    if rows and not kept:
        raise ValueError(
            f"{scored_uri}: the quality filter drops all {len(rows)} rows; lower the thresholds "
            f"(quality.min_layout_miou, min_clip, drop_lowest_fraction; or the --min-* options)"
        )
    meta = manifest.manifest_metadata(table)
    settings = {
        "min_layout_miou": min_layout_miou,
        "min_clip": min_clip,
        "drop_lowest_fraction": drop_lowest_fraction,
    }
    meta["quality_filter"] = json.dumps(settings, sort_keys=True)
    manifest.write_manifest(rows, out_uri, "transfer", extra_metadata=meta)
    manifest.write_manifest(kept, train_uri, "transfer", extra_metadata=meta)
    return {
        "uri": out_uri,
        "train_uri": train_uri,
        "rows": len(rows),
        "kept": len(kept),
        "dropped": len(rows) - len(kept),
        "by_reason": dict(sorted(by_reason.items())),
        "settings": settings,
    }


def kept_rows(table: pa.Table) -> pa.Table:
    """The rows training may use: ``kept`` true or null (not filtered)."""
    import pyarrow.compute as pc

    return table.filter(pc.invert(pc.fill_null(pc.equal(table.column("kept"), False), False)))


# ---------------------------------------------------------------------------------------------
# Figures: score histograms and the worst-N grid
# ---------------------------------------------------------------------------------------------


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
        out["columns"][c] = {
            "mean": round(float(vals.mean()), 4),
            "min": round(float(vals.min()), 4),
            "max": round(float(vals.max()), 4),
            "histogram": {"counts": counts.tolist(), "edges": [round(float(e), 3) for e in edges]},
        }
    kept = table.column("kept").to_pylist()
    reasons = [r for r in table.column("drop_reason").to_pylist() if r]
    out["dropped"] = sum(1 for k in kept if k is False)
    out["reasons"] = sorted(set(reasons))[:20]
    return out


def render_histograms_png(summaries: dict[str, dict[str, Any]]) -> bytes:
    """One row of score histograms per domain (``{domain: score_summary(...)}``), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted(summaries) or ["-"]
    fig, axes = plt.subplots(
        len(domains), len(SCORE_COLUMNS), figsize=(3 * len(SCORE_COLUMNS), 2.2 * len(domains)),
        squeeze=False,
    )  # fmt: skip
    for d_i, d in enumerate(domains):
        cols = summaries.get(d, {}).get("columns", {})
        for c_i, c in enumerate(SCORE_COLUMNS):
            ax = axes[d_i][c_i]
            if c in cols:
                h = cols[c]["histogram"]
                edges = np.array(h["edges"])
                ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge")
            ax.set_title(f"{d}: {c}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def worst_rows(table: pa.Table, n: int, column: str = "layout_miou") -> list[dict[str, Any]]:
    """The ``n`` rows with the lowest ``column`` (nulls left out), lowest first."""
    rows = [r for r in table.to_pylist() if r.get(column) is not None]
    return sorted(rows, key=lambda r: (r[column], r["sample_id"]))[:n]


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
    from PIL import Image, ImageDraw

    from zodi_core.conditions import render_condition
    from zodi_core.datasets.io import read_label

    table = manifest.read_manifest(scored_uri, "transfer")
    rows = worst_rows(table, n)
    if not rows:  # no layout scores: rank by CLIP score instead
        rows = worst_rows(table, n, "clip_score")
    w, h = cell
    sheet = Image.new("RGB", (4 * w, max(1, len(rows)) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(rows):
        label = read_label(r["label_uri"], r["label_format"])
        tiles = [
            _read_rgb(r["source_uri"]),
            render_condition(label, r["palette"]),
            _read_rgb(r["generated_uri"]),
        ]
        pred_uri = (
            storage.join_uri(predictions_uri, f"{r['sample_id']}.png") if predictions_uri else None
        )
        if pred_uri and storage.exists(pred_uri):
            pred = np.asarray(Image.open(io.BytesIO(storage.read_bytes(pred_uri))))
            tiles.append(render_condition(np.where(pred < NUM_CLASSES, pred, 255), "cityscapes"))
        for j, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile).resize((w, h)), (j * w, i * h))
        text = f"{r['sample_id']} mIoU {_fmt(r['layout_miou'])} acc {_fmt(r['layout_pixel_acc'])} "
        text += f"clip {_fmt(r['clip_score'], 3)} dir {_fmt(r['clip_direction'], 3)}"
        draw.rectangle((0, i * h, len(text) * 6 + 4, i * h + 12), fill="black")
        draw.text((2, i * h), text, fill="white")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue(), rows


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def quality_images(quality: dict[str, Any]) -> list[str]:
    """URIs of the images the quality section shows: the histograms, then each worst-N grid."""
    grids = [q["worst_grid"] for _, q in sorted(quality.get("domains", {}).items())
             if q.get("worst_grid")]  # fmt: skip
    return [*([quality["histograms"]] if quality.get("histograms") else []), *grids]


def render_quality_markdown(
    quality: dict[str, Any], image_src: Callable[[str], str | None] | None = None
) -> list[str]:
    """The report's quality section (lines) from the pipeline's ``quality`` entry:
    ``{"domains": {domain: apply_filter result + "summary", "worst_grid", "worst"},
    "histograms": uri}``. ``image_src``: what a browser can load for an image URI (see
    ``zodi_core.report.image_sources``); with one, the images are shown, not only linked."""
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
        means = [_fmt(cols.get(c, {}).get("mean"), 1 if c.startswith("layout") else 3)
                 for c in SCORE_COLUMNS]  # fmt: skip
        why = ", ".join(f"{k}: {v}" for k, v in q.get("by_reason", {}).items()) or "-"
        lines.append(
            f"| {d} | {q.get('rows', 0)} | {q.get('kept', 0)} | {q.get('dropped', 0)} | {why} | "
            + " | ".join(means)
            + " |"
        )
    settings = next(iter(domains.values())).get("settings")
    if settings:
        lines += ["", "Filter: " + ", ".join(f"{k}={v}" for k, v in settings.items())]
    hist = quality.get("histograms")
    if hist:
        lines += ["", f"Score histograms: [{hist}]({hist})"]
        if src(hist):
            lines += ["", f"![score histograms]({src(hist)})"]
    lines += ["", "Worst generations (source | condition | generated | prediction):", ""]
    for d, q in sorted(domains.items()):
        if q.get("worst_grid"):
            ids = ", ".join(
                f"{w['sample_id']} ({_fmt(w.get('layout_miou'))})" for w in q.get("worst", [])
            )
            lines.append(f"- {d}: [{q['worst_grid']}]({q['worst_grid']}) {ids}")
            if src(q["worst_grid"]):
                lines += ["", f"![worst generations, {d}]({src(q['worst_grid'])})", ""]
    lines.append("")
    return lines


# ---------------------------------------------------------------------------------------------
# Strength chosen without target images (zodi tune-strength)
# ---------------------------------------------------------------------------------------------


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
    components: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Transfer the first ``n`` samples (by id) at each strength, score them, recommend one.

    Args:
        samples_uri: a samples manifest (the source val split).
        config: the :class:`~zodi_core.config.TransferConfig` (its strength is replaced).
        strengths: the strengths to try, each in (0, 1].
        out_root: where images, manifests, the plot and the table go.
        components: loaded diffusion models (loaded once from ``config.models`` when None).
    Returns:
        ``{"rows": [{strength, means...}], "recommended", "margin", "plot", "table", ...}``.
    """
    from zodi_core import layout
    from zodi_core.transfer.runner import transfer_manifest

    if n < 1:
        raise ValueError(f"n: expected an integer >= 1, received {n}")
    ids = sorted(manifest.read_manifest(samples_uri, "samples").column("sample_id").to_pylist())
    if not ids:
        raise ValueError(f"{samples_uri}: the samples manifest is empty (0 rows)")
    ids = ids[:n]
    if components is None:
        from zodi_core.device import resolve_device
        from zodi_core.transfer.models import load_components

        device, dtype = resolve_device(config.device, config.dtype)
        components = load_components(config.models, device, dtype)
    domain = config.domain
    table = []
    for s in sorted(strengths):
        cfg = config.resolved().replace(strength=float(s))  # the sweep wins over domain settings
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
            f"| {r['strength']:g}{mark} | {r['images']} | {_fmt(r.get('layout_miou'))} | "
            f"{_fmt(r.get('layout_pixel_acc'))} | {_fmt(r.get('clip_score'), 3)} | "
            f"{_fmt(r.get('clip_direction'), 3)} |"
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ykey = next(
        (k for k in ("clip_direction", "clip_score") if any(r.get(k) is not None for r in table)),
        "strength",
    )
    xs = [
        r.get("layout_miou") if r.get("layout_miou") is not None else r["strength"] for r in table
    ]
    ys = [r.get(ykey) if r.get(ykey) is not None else 0.0 for r in table]
    fig, ax = plt.subplots(figsize=(5, 4))
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
    plt.close(fig)
    return buf.getvalue()
