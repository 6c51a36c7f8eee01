"""Train-id label map → RGB condition image for the segmentation ControlNet (SPEC §2).

``control_v11p_sd15_seg`` was trained on ADE20K-palette segmentation maps, so the default renders
each Cityscapes train class in the colour of its ADE20K counterpart (the class mapping below).
The ``cityscapes`` palette reproduces the authors' release, which feeds the Cityscapes colour map.
Both palettes are read from MMSegmentation's dataset metadata, not retyped. Ignored pixels (255)
are black. Resizing is nearest-neighbour only, so a rendered condition holds palette colours only
(the release's linear resize blends colours at class borders into colours of no class).
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
from PIL import Image

from zodi_core.labels import CLASSES, IGNORE_INDEX, NUM_CLASSES, check_train_ids

Palette = Literal["ade20k", "cityscapes"]
PALETTES: tuple[str, ...] = ("ade20k", "cityscapes")

#: Cityscapes train class → ADE20K class name (SPEC §2); ADE20K has no rider or train.
CITYSCAPES_TO_ADE20K: dict[str, str] = {
    "road": "road",
    "sidewalk": "sidewalk",
    "building": "building",
    "wall": "wall",
    "fence": "fence",
    "pole": "pole",
    "traffic light": "traffic light",
    "traffic sign": "signboard",
    "vegetation": "tree",
    "terrain": "grass",
    "sky": "sky",
    "person": "person",
    "rider": "person",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "train": "bus",
    "motorcycle": "minibike",
    "bicycle": "bicycle",
}

IGNORE_COLOR = (0, 0, 0)


@cache
def palette_colors(palette: str) -> np.ndarray:
    """Colour of each Cityscapes train id in ``palette``.

    Returns:
        (256, 3) uint8 lookup table: rows 0..18 are the 19 train classes, every other row
        (including the ignore index 255) is black.
    """
    if palette not in PALETTES:
        raise ValueError(f"palette: expected one of {PALETTES}, received {palette!r}")
    # mmseg's dataset metadata is the one source of both palettes (imported lazily: ~3 s).
    from mmseg.datasets import ADE20KDataset, CityscapesDataset

    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[IGNORE_INDEX] = IGNORE_COLOR
    if palette == "cityscapes":
        classes = tuple(CityscapesDataset.METAINFO["classes"])
        if classes != CLASSES:
            raise RuntimeError(f"mmseg Cityscapes classes {classes} differ from zodi's {CLASSES}")
        lut[:NUM_CLASSES] = np.asarray(CityscapesDataset.METAINFO["palette"], dtype=np.uint8)
    else:
        ade_classes = list(ADE20KDataset.METAINFO["classes"])
        ade_palette = ADE20KDataset.METAINFO["palette"]
        for train_id, name in enumerate(CLASSES):
            lut[train_id] = ade_palette[ade_classes.index(CITYSCAPES_TO_ADE20K[name])]
    lut.setflags(write=False)
    return lut


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to ``size`` = (width, height); keeps dtype and exact values.

    Args:
        array: (H, W) or (H, W, C) uint8.
    """
    width, height = size
    if array.shape[1] == width and array.shape[0] == height:
        return array
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize(size, Image.NEAREST))


def render_condition(
    train_ids: np.ndarray, palette: str = "ade20k", size: tuple[int, int] | None = None
) -> np.ndarray:
    """Render a train-id map as the ControlNet condition image.

    Args:
        train_ids: (H, W) uint8 train ids in 0..18, 255 = ignore.
        palette: ``ade20k`` (through :data:`CITYSCAPES_TO_ADE20K`) or ``cityscapes``.
        size: (width, height) of the result; None keeps (W, H). Nearest-neighbour: the labels are
            resized before colouring, so no colour outside the palette can appear.
    Returns:
        (height, width, 3) uint8 RGB.
    Raises:
        ValueError: the map is not 2-D or holds ids other than 0..18 and 255.
    """
    train_ids = np.asarray(train_ids)
    if train_ids.ndim != 2:
        raise ValueError(f"train_ids: expected an (H, W) map, received shape {train_ids.shape}")
    check_train_ids(train_ids)
    lut = palette_colors(palette)
    ids = train_ids.astype(np.uint8)
    if size is not None:
        ids = resize_nearest(ids, size)
    return lut[ids]
