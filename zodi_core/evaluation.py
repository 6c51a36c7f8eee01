"""Evaluation (SPEC §4): mIoU, per-class IoU and aAcc over the 19 classes, per target manifest,
at ``EvalConfig``'s size (labels resized with the images).

Several checkpoints (one per seed) give mean ± std, the paper's protocol. A proxy manifest
(generated target-like images of the source val split) is reported beside the real target of
its domain: the paper's claim that generated images estimate target performance.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zodi_core import storage
from zodi_core.config import EvalConfig
from zodi_core.device import resolve_device
from zodi_core.labels import CLASSES, NUM_CLASSES
from zodi_core.manifest import read_manifest
from zodi_core.metrics import confusion_matrix, iou_metrics


@dataclass
class Areas:
    """Pixel counts summed over images: a (C, C) confusion matrix (see :mod:`zodi_core.metrics`)."""

    confusion: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES,) * 2, np.int64))
    images: int = 0

    def add(self, pred, label) -> None:
        """Accumulate one image: ``pred`` and ``label`` (H, W) integer tensors, 255 ignored."""
        self.confusion += confusion_matrix(pred, label)
        self.images += 1

    def metrics(self) -> dict[str, Any]:
        """``{"mIoU", "aAcc" (percent), "per_class": {class: IoU % or None}, "images"}``."""
        m = iou_metrics(self.confusion)
        return {
            "mIoU": _percent(m["mIoU"]),
            "aAcc": _percent(m["aAcc"]),
            "per_class": {c: _percent(100 * v) for c, v in zip(CLASSES, m["IoU"], strict=True)},
            "images": self.images,
        }


def _percent(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 2)


def target_name(manifest_uri: str, image_column: str | None = None) -> str:
    """A report name from a manifest's contents: ``acdc-night-val``, ``proxy-night``, ..."""
    if (table := read_manifest(manifest_uri)).num_rows == 0:
        raise ValueError(f"{manifest_uri}: the manifest is empty (0 rows)")

    def values(col: str) -> str:
        return "+".join(sorted(set(table.column(col).to_pylist())))

    if image_column == "generated_uri":
        return "proxy-" + values("domain")
    return "-".join(values(c) for c in ("dataset", "domain", "split") if c in table.column_names)


def load_model(mmseg_config: str | os.PathLike, checkpoint_uri: str, device: str = "cpu"):
    """The config's segmentor (``mmseg.apis.init_model``) with a checkpoint's weights, in eval
    mode; a ZoDi one gives its plain segmentor. Strict: ``init_model`` loads non-strictly, which
    would leave random weights silently."""
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import init_model

    from zodi_core.seg.adapt import ZODI_SEGMENTOR
    from zodi_core.seg.checkpoint import load_checkpoint_file
    from zodi_core.seg.train import load_config

    cfg = load_config(mmseg_config)
    if cfg.model.get("type") == ZODI_SEGMENTOR:
        cfg.model = cfg.model.segmentor
    model = init_model(cfg, device="cpu")
    ckpt = load_checkpoint_file(checkpoint_uri)  # a ZoDi one: the segmentor's under "segmentor."
    state = {k.removeprefix("segmentor."): v for k, v in ckpt.get("state_dict", ckpt).items()}
    if (fit := model.load_state_dict(state, strict=False)).missing_keys or fit.unexpected_keys:
        raise ValueError(
            f"checkpoint {checkpoint_uri} does not fit config {mmseg_config}: missing keys "
            f"{fit.missing_keys[:5]}{'...' if len(fit.missing_keys) > 5 else ''}, unexpected "
            f"keys {fit.unexpected_keys[:5]}{'...' if len(fit.unexpected_keys) > 5 else ''}"
        )
    # Single-process inference: SyncBN (stock mmseg configs) as plain BN, which runs on CPU too.
    return revert_sync_batchnorm(model).to(device).eval()


def evaluate_model(
    model, manifest_uri: str, eval_config: EvalConfig, image_column: str | None = None
) -> Areas:
    """Run ``model`` on every row of a manifest at the evaluation size (half precision: under
    ``torch.autocast``); return the areas."""
    import torch
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader

    from zodi_core.seg.datasets import ZoDiManifestDataset

    load = dict(type="LoadZoDiSample", scale=(eval_config.width, eval_config.height))
    pipeline = [load, dict(type="PackSegInputs")]
    dataset = ZoDiManifestDataset(
        manifest=manifest_uri, image_column=image_column, test_mode=True, pipeline=pipeline
    )
    loader = DataLoader(dataset, batch_size=eval_config.batch_size, collate_fn=pseudo_collate)
    areas = Areas()
    device = next(model.parameters()).device
    half = eval_config.dtype in ("float16", "bfloat16")  # "auto", "float32": full precision
    dtype = getattr(torch, eval_config.dtype) if half else None
    autocast = torch.autocast(device.type, dtype=dtype, enabled=half)
    with torch.no_grad(), autocast:
        for batch in loader:
            for sample in model.val_step(batch):
                areas.add(sample.pred_sem_seg.data.squeeze(0), sample.gt_sem_seg.data.squeeze(0))
    return areas


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    if not (vals := [v for v in values if v is not None]):
        return None, None
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return round(float(np.mean(vals)), 2), round(std, 2)


def aggregate_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """mean ± std (sample std, ddof=1) over seeds of mIoU, aAcc and every class IoU."""
    out: dict[str, Any] = {"runs": len(runs), "images": runs[0]["images"]}
    for key in ("mIoU", "aAcc"):
        out[key], out[f"{key}_std"] = _mean_std([r[key] for r in runs])
    out["per_class"] = {c: _mean_std([r["per_class"][c] for r in runs])[0] for c in CLASSES}
    return out


def render_confusion_png(confusion: np.ndarray, title: str) -> bytes:
    """A row-normalised (C, C) confusion matrix as a PNG (rows: label, columns: prediction)."""
    from matplotlib.figure import Figure

    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    fig = Figure(figsize=(9, 8))
    ax = fig.subplots()
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(NUM_CLASSES), CLASSES, rotation=90, fontsize=7)
    ax.set_yticks(range(NUM_CLASSES), CLASSES, fontsize=7)
    ax.set(xlabel="prediction", ylabel="label", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per target (proxy estimate beside its real target), then
    per-class IoU."""
    targets = report["targets"]
    proxies = {t["domain"]: name for name, t in targets.items() if t["proxy"]}
    multi = report["seeds"] > 1
    lines = [
        f"# Evaluation: {Path(report['config']).name}",
        "",
        f"Checkpoints: {report['seeds']} (mean ± std over seeds)" if multi else
        f"Checkpoint: `{report['checkpoints'][0]}`",
        f"Resolution: {report['height']}x{report['width']}; mIoU over {NUM_CLASSES} classes (%).",
        "",
        "| target | images | mIoU | aAcc | proxy mIoU (generated) |" + (" best ckpt mIoU |" if report.get("best_checkpoint") else ""),
        "|---|---|---|---|---|" + ("---|" if report.get("best_checkpoint") else ""),
    ]  # fmt: skip
    for name, t in targets.items():
        s = t["summary"]
        std = {k: s.get(f"{k}_std") if multi else None for k in ("mIoU", "aAcc")}
        proxy = "–"
        if not t["proxy"] and t["domain"] in proxies:
            ps = targets[proxies[t["domain"]]]["summary"]
            proxy = f"{_fmt(ps['mIoU'], ps.get('mIoU_std') if multi else None)} ({proxies[t['domain']]})"
        row = f"| {name} | {s['images']} | {_fmt(s['mIoU'], std['mIoU'])} | {_fmt(s['aAcc'], std['aAcc'])} | {proxy} |"
        if report.get("best_checkpoint"):
            row += f" {_fmt(t['best']['mIoU']) if t.get('best') else '–'} |"
        lines.append(row)
    lines += ["", "## Per-class IoU (%)", "", "| class | " + " | ".join(targets) + " |",
              "|---|" + "---|" * len(targets)]  # fmt: skip
    for c in CLASSES:
        cells = [_fmt(t["summary"]["per_class"][c]) for t in targets.values()]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_miou_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of :func:`evaluate_checkpoint`'s ``metrics`` for the terminal."""
    rows = [("target", "images", "mIoU", "aAcc")]
    rows += [
        (name, str(m["images"]), _fmt(m["mIoU"], m.get("mIoU_std")), _fmt(m["aAcc"]))
        for name, m in metrics.items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    rows.insert(1, tuple("-" * w for w in widths))
    line = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(line.format(*r) for r in rows)


def evaluate_checkpoint(
    checkpoints: str | list[str],
    mmseg_config: str | os.PathLike,
    manifests: list[str],
    out: str,
    *,
    proxy_manifest: str | None = None,
    best_checkpoint: str | None = None,
    eval_config: EvalConfig | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint, or one per seed, on target manifests (+ proxy); write
    ``report.json``, ``report.md`` and ``confusion_<target>.png`` under ``out``.

    ``best_checkpoint`` is reported separately (the paper's best epoch). Returns the reports'
    URIs, ``targets`` ``{name: mIoU}`` and ``metrics`` ``{name: {mIoU, mIoU_std, aAcc, ...}}``.
    """
    eval_config = eval_config or EvalConfig()
    checkpoints = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints)
    if not checkpoints:
        raise ValueError("checkpoints: expected at least one checkpoint URI, received none")
    if not manifests and not proxy_manifest:
        raise ValueError("manifests: expected at least one target manifest (or a proxy manifest)")
    device, _ = resolve_device(device or eval_config.device, eval_config.dtype, auto_half=False)
    sets = [(m, None) for m in manifests]  # (manifest, image column: the proxy's generated_uri)
    if proxy_manifest:
        sets.append((proxy_manifest, "generated_uri"))
    names = [target_name(m, col) for m, col in sets]
    if len(set(names)) != len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]

    def evaluate(checkpoint: str) -> list[Areas]:  # one Areas per target
        model = load_model(mmseg_config, checkpoint, str(device))
        return [evaluate_model(model, m, eval_config, col) for m, col in sets]

    def write(name: str, data: bytes) -> str:
        return storage.write_bytes(storage.join_uri(out, name), data)

    runs = [evaluate(ckpt) for ckpt in checkpoints]
    best = evaluate(best_checkpoint) if best_checkpoint else None
    targets: dict[str, Any] = {}
    report: dict[str, Any] = {
        "config": str(mmseg_config),
        "checkpoints": checkpoints,
        "best_checkpoint": best_checkpoint,
        "seeds": len(checkpoints),
        "height": eval_config.height,
        "width": eval_config.width,
        "targets": targets,
    }
    for i, (name, (m, col)) in enumerate(zip(names, sets, strict=True)):
        per_run = [areas[i].metrics() for areas in runs]
        confusion = sum(areas[i].confusion for areas in runs)
        slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)
        targets[name] = {
            "manifest": m,
            "proxy": col is not None,
            "domain": "+".join(sorted(set(read_manifest(m).column("domain").to_pylist()))),
            "summary": aggregate_runs(per_run) if len(per_run) > 1 else per_run[0],
            "runs": per_run,
            "best": best[i].metrics() if best else None,
            "confusion_png": write(f"confusion_{slug}.png", render_confusion_png(confusion, name)),
        }
    json_uri = write("report.json", json.dumps(report, indent=2).encode())
    md_uri = write("report.md", render_markdown(report).encode())
    shown = ("mIoU", "mIoU_std", "aAcc", "images")
    return {
        "report_json": json_uri,
        "report_md": md_uri,
        "confusion_png": [t["confusion_png"] for t in targets.values()],
        "targets": {n: t["summary"]["mIoU"] for n, t in targets.items()},
        "metrics": {
            n: {**{k: t["summary"].get(k) for k in shown}, "proxy": t["proxy"]}
            for n, t in targets.items()
        },
    }
