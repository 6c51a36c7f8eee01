"""Cityscapes label ids → 19 train ids, in one table (cityscapesScripts' `labels.py` convention).

The 19 train classes are MMSegmentation's ``CityscapesDataset.METAINFO['classes']`` in order;
every other label id maps to :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

#: Label id (cityscapesScripts' labels.py) of each train class, in CLASSES order; every other
#: label id in 0..33 is ignored, and an id above 33 is outside the table.
TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
_LUT = np.full(34, IGNORE_INDEX, dtype=np.uint8)  # label id → train id
_LUT[list(TRAIN_LABEL_IDS)] = range(NUM_CLASSES)
#: train id → its label id (255 → 0 'unlabeled').
_INVERSE_LUT = np.zeros(256, dtype=np.uint8)
_INVERSE_LUT[:NUM_CLASSES] = TRAIN_LABEL_IDS


def label_ids_to_train_ids(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 label ids in 0..33 → (H, W) uint8 train ids in 0..18 (255: ignored).

    Raises ValueError listing the ids outside the table.
    """
    label = np.asarray(label)
    outside = (label < 0) | (label >= len(_LUT))
    if outside.any():
        raise ValueError(f"label ids outside the table: {np.unique(label[outside]).tolist()}")
    return _LUT[label]


def train_ids_to_label_ids(train: np.ndarray) -> np.ndarray:
    """Inverse map (255 → 0 'unlabeled'), for writing Cityscapes-style label-id maps."""
    return _INVERSE_LUT[np.asarray(train, dtype=np.uint8)]


def check_train_ids(train: np.ndarray) -> None:
    """Raise ValueError if a train-id map holds values other than 0..18 and 255."""
    train = np.asarray(train)
    bad = (train < 0) | ((train >= NUM_CLASSES) & (train != IGNORE_INDEX))
    if bad.any():
        raise ValueError(f"train ids outside 0..18 and 255: {np.unique(train[bad]).tolist()}")
