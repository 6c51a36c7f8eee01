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

#: label id → train id for the 34 Cityscapes label ids (0..33) plus license plate (-1 → 255).
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,
    7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255,
    17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

_LUT = np.array([LABEL_ID_TO_TRAIN_ID.get(i, -1) for i in range(256)], dtype=np.int16)
#: train id → its label id (the inverse for the 19 classes; 255 → 0 'unlabeled').
_TRAINED = {lid: t for lid, t in LABEL_ID_TO_TRAIN_ID.items() if t != IGNORE_INDEX}
_INVERSE_LUT = np.zeros(256, dtype=np.uint8)
_INVERSE_LUT[list(_TRAINED.values())] = list(_TRAINED)


def label_ids_to_train_ids(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 label ids in 0..33 → (H, W) uint8 train ids in 0..18 (255: ignored).

    Raises ValueError listing the ids outside the table.
    """
    label = np.asarray(label)
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"label ids outside the table: range {label.min()}..{label.max()}")
        label = label.astype(np.uint8)
    out = _LUT[label]
    if (out < 0).any():
        bad = sorted(int(v) for v in np.unique(label[out < 0]))
        raise ValueError(f"label ids outside the table: {bad}")
    return out.astype(np.uint8)


def train_ids_to_label_ids(train: np.ndarray) -> np.ndarray:
    """Inverse map (255 → 0 'unlabeled'), for writing Cityscapes-style label-id maps."""
    return _INVERSE_LUT[np.asarray(train, dtype=np.uint8)]


def check_train_ids(train: np.ndarray) -> None:
    """Raise ValueError if a train-id map holds values other than 0..18 and 255."""
    train = np.asarray(train)
    # A uint8 map is counted, not sorted: one pass over the pixels (np.unique sorts them; this
    # check runs on every image of a transfer, beside the model).
    vals = (
        np.flatnonzero(np.bincount(train.ravel(), minlength=256))
        if train.dtype == np.uint8
        else np.unique(train)
    )
    bad = [int(v) for v in vals if not (0 <= v < NUM_CLASSES or v == IGNORE_INDEX)]
    if bad:
        raise ValueError(f"train ids outside 0..18 and 255: {bad}")
