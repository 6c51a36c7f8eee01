"""Tiny hand-written pairs and manifests for the seg/evaluation tests (no dataset layout needed).

Scenes are horizontal bands of classes (label = train id of the band), drawn in a per-class colour
with noise; a "generated" twin is the same scene darker and bluer (a night look), so the pair is
aligned pixel for pixel and a model can learn both.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zodi_core.labels import train_ids_to_label_ids
from zodi_core.manifest import write_manifest

#: Classes drawn in the bands (road, building, vegetation, sky, car).
BAND_CLASSES = (10, 2, 8, 0, 13)
_COLOURS = {
    0: (90, 90, 100),
    2: (130, 100, 80),
    8: (60, 120, 40),
    10: (120, 170, 230),
    13: (200, 30, 30),
}


def scene(index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB (H, W, 3) uint8, train ids (H, W) uint8) of scene ``index``; a few pixels ignored."""
    rng = np.random.default_rng(index)
    cuts = np.sort(rng.choice(np.arange(2, height - 2), size=len(BAND_CLASSES) - 1, replace=False))
    label = np.zeros((height, width), np.uint8)
    start = 0
    for cls, end in zip(BAND_CLASSES, [*cuts, height], strict=True):
        label[start:end] = cls
        start = end
    label[:, : max(1, width // 16)] = 255
    rgb = np.zeros((height, width, 3), np.float32)
    for cls, colour in _COLOURS.items():
        rgb[label == cls] = colour
    rgb += rng.normal(0, 8, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), label


def night(rgb: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32) * np.array([0.35, 0.4, 0.6]) + np.array([5, 5, 20])
    return np.clip(out, 0, 255).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def sample_row(
    sid: str,
    image: str,
    label: str,
    split: str = "train",
    domain: str = "clear",
    dataset: str = "cityscapes",
    height: int = 0,
    width: int = 0,
) -> dict:
    return {
        "sample_id": sid, "dataset": dataset, "split": split, "domain": domain,
        "image_uri": image, "label_uri": label, "label_format": "label_ids",
        "width": width, "height": height, "image_sha256": "0" * 64, "label_sha256": "0" * 64,
    }  # fmt: skip


def transfer_row(
    sid: str,
    source: str,
    label: str,
    generated: str | None,
    status: str = "ok",
    domain: str = "night",
) -> dict:
    return {
        "sample_id": sid, "domain": domain, "source_uri": source, "label_uri": label,
        "label_format": "label_ids", "generated_uri": generated, "prompt": "driving at night",
        "negative_prompt": "", "strength": 0.9, "seed": 0, "k": 18, "first_timestep": 901,
        "palette": "ade20k", "method": "zodi", "model_revisions": "{}", "config_digest": "x",
        "status": status, "error": None, "seconds": 0.0,
    }  # fmt: skip


def write_dataset(
    root: Path,
    n: int = 6,
    height: int = 64,
    width: int = 128,
    *,
    split: str = "train",
    shuffle: bool = False,
    seed: int = 0,
) -> dict[str, str]:
    """Write n scenes, their night twins and label-id maps; return manifest URIs.

    Returns ``{"samples": samples manifest of the sources, "paired": transfer manifest,
    "target": samples manifest of the night images (a stand-in real target)}``; with
    ``shuffle`` the manifest rows are written in a random order.
    """
    samples, pairs, target = [], [], []
    for i in range(n):
        sid = f"{split}_{i:03d}"
        rgb, train = scene(1000 * seed + i + (500 if split == "val" else 0), height, width)
        img = save_png(root / "src" / f"{sid}.png", rgb)
        gen = save_png(root / "gen" / f"{sid}.png", night(rgb))
        lab = save_png(root / "lab" / f"{sid}.png", train_ids_to_label_ids(train))
        samples.append(sample_row(sid, img, lab, split=split, height=height, width=width))
        target.append(
            sample_row(
                sid,
                gen,
                lab,
                split=split,
                domain="night",
                dataset="acdc",
                height=height,
                width=width,
            )
        )
        pairs.append(transfer_row(sid, img, lab, gen))
    if shuffle:
        rnd = random.Random(seed)
        for rows in (samples, pairs, target):
            rnd.shuffle(rows)
    return {
        "samples": write_manifest(samples, str(root / f"{split}_samples.parquet"), "samples"),
        "paired": write_manifest(pairs, str(root / f"{split}_paired.parquet"), "transfer"),
        "target": write_manifest(target, str(root / f"{split}_night.parquet"), "samples"),
    }


@pytest.fixture(autouse=True)
def torch_single_thread():
    """Run torch on one thread in these tests: on the shared 2-core CI machine, two OpenMP
    threads contending with other processes made a tiny forward pass 300x slower (1 s vs 3 ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
