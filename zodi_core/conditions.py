"""Train-id label map → RGB condition image for the segmentation ControlNet (SPEC §2).

``control_v11p_sd15_seg`` was trained on ADE20K-palette maps, so the default renders each class
in its ADE20K counterpart's colour; ``cityscapes`` reproduces the authors' release. The palettes
are mmseg's, held as constants (the transfer runs without mmseg; a test compares them).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

from zodi_core.labels import NUM_CLASSES, check_train_ids

RGB = tuple[int, int, int]

#: Cityscapes train class → (its RGB in mmseg's ``CityscapesDataset.METAINFO["palette"]``, its
#: ADE20K class (SPEC §2; ADE20K has no rider or train), that class's RGB in mmseg's
#: ``ADE20KDataset.METAINFO["palette"]``).
CLASS_COLORS: dict[str, tuple[RGB, str, RGB]] = {
    "road": ((128, 64, 128), "road", (140, 140, 140)),
    "sidewalk": ((244, 35, 232), "sidewalk", (235, 255, 7)),
    "building": ((70, 70, 70), "building", (180, 120, 120)),
    "wall": ((102, 102, 156), "wall", (120, 120, 120)),
    "fence": ((190, 153, 153), "fence", (255, 184, 6)),
    "pole": ((153, 153, 153), "pole", (51, 0, 255)),
    "traffic light": ((250, 170, 30), "traffic light", (41, 0, 255)),
    "traffic sign": ((220, 220, 0), "signboard", (255, 5, 153)),
    "vegetation": ((107, 142, 35), "tree", (4, 200, 3)),
    "terrain": ((152, 251, 152), "grass", (4, 250, 7)),
    "sky": ((70, 130, 180), "sky", (6, 230, 230)),
    "person": ((220, 20, 60), "person", (150, 5, 61)),
    "rider": ((255, 0, 0), "person", (150, 5, 61)),
    "car": ((0, 0, 142), "car", (0, 102, 200)),
    "truck": ((0, 0, 70), "truck", (255, 0, 20)),
    "bus": ((0, 60, 100), "bus", (255, 0, 245)),
    "train": ((0, 80, 100), "bus", (255, 0, 245)),
    "motorcycle": ((0, 0, 230), "minibike", (163, 0, 255)),
    "bicycle": ((119, 11, 32), "bicycle", (255, 245, 0)),
}


@cache
def palette_colors(palette: str) -> np.ndarray:
    """Colour of each Cityscapes train id in ``palette``: a read-only (256, 3) uint8 table,
    rows 0..18 the train classes, every other row (the ignore index 255 too) black."""
    column = {"cityscapes": 0, "ade20k": 2}.get(palette)  # its colour in CLASS_COLORS' entries
    if column is None:
        raise ValueError(f"palette: expected one of ('ade20k', 'cityscapes'), received {palette!r}")
    lut = np.zeros((256, 3), dtype=np.uint8)  # CLASS_COLORS lists the classes in train-id order
    lut[:NUM_CLASSES] = [colors[column] for colors in CLASS_COLORS.values()]
    lut.setflags(write=False)
    return lut


def resize_image(
    image: np.ndarray, size: tuple[int, int], resample: int = Image.BICUBIC
) -> np.ndarray:
    """Bicubic resize of an (H, W, 3) uint8 image to ``size`` = (width, height) (PIL's filter):
    a source image to its generation size and a generated one back (the sampler, the runner's
    loader); the same array if already there."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, resample))


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) or (H, W, C) uint8 array to ``size`` = (width,
    height); keeps dtype and exact values."""
    return resize_image(array, size, Image.NEAREST)


def render_condition(
    train_ids: np.ndarray, palette: str = "ade20k", size: tuple[int, int] | None = None
) -> np.ndarray:
    """Render (H, W) uint8 train ids (0..18, 255 = ignore) as the ControlNet condition, an
    (height, width, 3) uint8 RGB image in ``palette``; ``size`` = (width, height), None keeps
    (W, H), resized before colouring. Raises ValueError: not 2-D, or ids outside 0..18 and 255."""
    train_ids = np.asarray(train_ids)
    if train_ids.ndim != 2:
        raise ValueError(f"train_ids: expected an (H, W) map, received shape {train_ids.shape}")
    check_train_ids(train_ids)
    ids = train_ids.astype(np.uint8)
    return palette_colors(palette)[ids if size is None else resize_nearest(ids, size)]
