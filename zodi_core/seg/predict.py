"""Run a trained (adapted) model on a folder of images or a manifest (``zodi predict``): for
each ``<id>`` (``sample_id``, or the path in the folder without suffix), ``labels/<id>.png``
((H, W) uint8 train ids 0..18 at the image's size) and ``overlays/<id>.png``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zodi_core import storage
from zodi_core.datasets.io import encode_png, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_inputs(inputs: str) -> list[tuple[str, str]]:
    """``(id, image URI)`` of every image of a folder or manifest (see the module doc)."""
    if inputs.endswith(".parquet"):
        from zodi_core.manifest import read_manifest

        table = read_manifest(inputs)
        column = next((c for c in ("image_uri", "generated_uri") if c in table.column_names), None)
        if column is None:
            raise ValueError(
                f"{inputs}: expected a samples manifest (image_uri) or a paired manifest "
                f"(generated_uri), received columns {table.column_names}"
            )
        ids, uris = table.column("sample_id").to_pylist(), table.column(column).to_pylist()
        return [(i, u) for i, u in zip(ids, uris, strict=True) if u]
    if not (folder := Path(inputs)).is_dir():
        raise FileNotFoundError(f"--input {inputs}: not a folder of images nor a .parquet manifest")
    if not (files := sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)):
        raise FileNotFoundError(f"--input {inputs}: no {'/'.join(IMAGE_SUFFIXES)} images in it")
    return [(p.relative_to(folder).with_suffix("").as_posix(), str(p)) for p in files]


def colour_overlay(rgb: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``rgb`` blended with the Cityscapes colour of each predicted class."""
    from mmseg.datasets import CityscapesDataset

    palette = np.zeros((256, 3), np.uint8)
    palette[: len(CityscapesDataset.METAINFO["palette"])] = CityscapesDataset.METAINFO["palette"]
    colours = palette[train_ids]
    return (rgb.astype(np.float32) * (1 - alpha) + colours * alpha).round().astype(np.uint8)


def predict_labels(
    model: Any, images: Sequence[np.ndarray], scale: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """(H, W) uint8 train ids of each (H, W, 3) uint8 RGB image, one forward pass per batch of
    images that share a size (all of them with ``scale`` (W, H)), each resized back to its image's
    size."""
    import mmcv
    import torch
    from mmengine.dataset import pseudo_collate
    from mmseg.datasets.transforms import PackSegInputs

    pack = PackSegInputs(meta_keys=("img_shape", "ori_shape"))
    packed, groups = [], {}
    for i, rgb in enumerate(images):
        img = np.ascontiguousarray(rgb[..., ::-1])
        img = mmcv.imresize(img, scale, interpolation="bilinear") if scale else img
        packed.append(pack({"img": img, "img_shape": img.shape[:2], "ori_shape": img.shape[:2]}))
        groups.setdefault(img.shape, []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    for idx in groups.values():
        with torch.no_grad():
            results = model.test_step(pseudo_collate([packed[i] for i in idx]))
        for i, res in zip(idx, results, strict=True):
            pred = res.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
            out[i] = mmcv.imresize(pred, images[i].shape[1::-1], interpolation="nearest")  # (W, H)
    return out


def predict_images(
    mmseg_config: str | os.PathLike,
    checkpoint: str,
    inputs: str,
    out: str,
    *,
    device: str = "auto",
    scale: tuple[int, int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every input image at ``scale`` (W, H; None: its own size); write label maps and
    overlays under ``out``. Returns ``{"images": count, "labels", "overlays": folders}``."""
    from tqdm import tqdm

    from zodi_core.device import resolve_device
    from zodi_core.evaluation import load_model

    items = list_inputs(inputs)
    dev, _ = resolve_device(device, "float32", auto_half=False)
    model = load_model(mmseg_config, checkpoint, str(dev))
    labels_dir, overlays_dir = storage.join_uri(out, "labels"), storage.join_uri(out, "overlays")
    for sample_id, uri in tqdm(items, desc="predict", unit="img", disable=not progress,
                               file=sys.stderr):  # fmt: skip
        rgb = read_image(uri)
        [pred] = predict_labels(model, [rgb], scale)
        storage.write_bytes(storage.join_uri(labels_dir, f"{sample_id}.png"), encode_png(pred))
        overlay = colour_overlay(rgb, pred)
        storage.write_bytes(storage.join_uri(overlays_dir, f"{sample_id}.png"), encode_png(overlay))
    return {"images": len(items), "labels": labels_dir, "overlays": overlays_dir}
