"""Reading images and labels referenced by manifests (any storage URI)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from zodi_core import storage
from zodi_core.labels import check_train_ids, label_ids_to_train_ids

LABEL_FORMATS = ("label_ids", "train_ids")


def decode_png(data: bytes, name: str, mode: str | None = None) -> np.ndarray:
    """Decode and fully load a PNG; raise ValueError naming ``name`` if corrupt or truncated."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert(mode) if mode and im.mode != mode else im)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: corrupt or truncated image ({err})") from None


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def read_image(uri: str, **storage_options) -> np.ndarray:
    """Read an RGB image: (H, W, 3) uint8."""
    return decode_png(storage.read_bytes(uri, **storage_options), uri, mode="RGB")


def decode_label(data: bytes, name: str, label_format: str) -> np.ndarray:
    """Decode a label map as train ids: (H, W) uint8 in 0..18 or 255; ValueError naming ``name``.

    ``label_format`` is ``label_ids`` (Cityscapes/GTA5 label ids, mapped through the table) or
    ``train_ids`` (ACDC ``*_gt_labelTrainIds.png``, checked).
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(
            f"label_format: expected one of {LABEL_FORMATS}, received {label_format!r}"
        )
    raw = decode_png(data, name)
    if raw.ndim != 2:
        raise ValueError(f"{name}: expected a single-channel label map, found shape {raw.shape}")
    try:
        if label_format == "label_ids":
            return label_ids_to_train_ids(raw)
        check_train_ids(raw)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return raw.astype(np.uint8)


def read_label(uri: str, label_format: str, **storage_options) -> np.ndarray:
    """Read a label map as train ids (see :func:`decode_label`)."""
    return decode_label(storage.read_bytes(uri, **storage_options), uri, label_format)
