"""Strength preview: source | condition | one generated image per strength (the paper's Fig. A).

Choosing a strength needs no target image: the user looks at how much of the scene each strength
keeps. Each column is one sampler call with the same seed, so columns differ only in strength.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from zodi_core.conditions import render_condition, resize_image
from zodi_core.config import TransferConfig
from zodi_core.transfer.sampler import TransferSampler, generation_size

CAPTION_HEIGHT = 16


def parse_strengths(text: str) -> list[float]:
    """'0.4,0.65,0.9' → [0.4, 0.65, 0.9]; each in (0, 1] (else a ValueError naming it)."""
    try:  # (float strips the spaces; "" is not a number)
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--strengths: expected comma-separated numbers, received {text!r}"
        ) from None
    if bad := [v for v in values if not 0.0 < v <= 1.0]:
        raise ValueError(f"--strengths: expected values in (0, 1], received {bad[0]} in {text!r}")
    return values


def make_preview(
    sampler: TransferSampler,
    image: np.ndarray,
    train_ids: np.ndarray,
    strengths: Sequence[float],
    config: TransferConfig,
    sample_id: str = "preview",
) -> np.ndarray:
    """Contact sheet of an (H, W, 3) uint8 source and its (H, W) train ids transferred at
    several strengths: (h + caption, (2 + len(strengths)) · w, 3) uint8 at the generation size."""
    # resolved once: the domain's own strength would otherwise win over the sweep's
    config = config.resolved().replace(resize_to_source=False)
    size = generation_size(image.shape[1], image.shape[0], config.short_side, config.size_multiple)
    tiles = [
        ("source", resize_image(image, size)),
        (f"condition ({config.palette})", render_condition(train_ids, config.palette, size)),
    ]
    for s in strengths:
        out = sampler([image], [train_ids], [sample_id], config.replace(strength=s))[0]
        meta = out.metadata
        tiles.append((f"S={s:g} k={meta['k']} t={meta['first_timestep']}", out.image))
    w, h = size
    sheet = Image.new("RGB", (w * len(tiles), h + CAPTION_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (caption, tile) in enumerate(tiles):
        sheet.paste(Image.fromarray(tile), (i * w, CAPTION_HEIGHT))
        draw.text((i * w + 2, 2), caption, fill=(0, 0, 0))
    return np.asarray(sheet)
