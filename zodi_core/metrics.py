"""Segmentation metrics, in one place (evaluation, quality scores, pocket measurements): a
confusion matrix, and MMSeg's own ``IoUMetric`` mIoU and aAcc from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zodi_core.labels import IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(pred: Any, label: Any) -> np.ndarray:
    """Pixel counts of ``pred`` against ``label``: (C, C) int64, rows label, columns prediction.

    ``pred``, ``label``: integer train ids in 0..C-1 of one shape ((H, W) or (N, H, W)), array or
    tensor (counted on its device); ``IGNORE_INDEX`` pixels of ``label`` are left out.
    """
    import torch

    pred = torch.as_tensor(pred).long()
    label = torch.as_tensor(label).to(pred.device).long()
    if pred.shape != label.shape:
        raise ValueError(
            f"pred: expected the label's shape {tuple(label.shape)}, received {tuple(pred.shape)}"
        )
    valid = label != IGNORE_INDEX
    p, t = pred[valid], label[valid]
    for name, ids in (("label", t), ("pred", p)):
        if (bad := ids[(ids < 0) | (ids >= NUM_CLASSES)]).numel():
            raise ValueError(
                f"{name}: ids outside 0..{NUM_CLASSES - 1} and {IGNORE_INDEX}: "
                f"{sorted(set(bad.tolist()))}"
            )
    counts = torch.bincount(t * NUM_CLASSES + p, minlength=NUM_CLASSES**2)
    return counts.reshape(NUM_CLASSES, NUM_CLASSES).cpu().numpy().astype(np.int64)


def iou_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """MMSeg's metrics of a (C, C) confusion matrix: ``{"IoU": (C,) in [0, 1], "mIoU", "aAcc"
    (percent, None when undefined)}``; a class absent from labels and predictions has IoU NaN
    and is left out of the mean, as MMSeg's per-dataset mIoU does."""
    import torch
    from mmseg.evaluation import IoUMetric

    confusion = np.asarray(confusion, dtype=np.int64)
    intersect = np.diag(confusion)
    area_label, area_pred = confusion.sum(axis=1), confusion.sum(axis=0)
    areas = [intersect, area_pred + area_label - intersect, area_pred, area_label]
    m = IoUMetric.total_area_to_metrics(*(torch.tensor(a) for a in areas), ["mIoU"])
    iou = np.asarray(m["IoU"], dtype=np.float64)
    return {
        "IoU": iou,
        "mIoU": None if np.isnan(iou).all() else 100 * float(np.nanmean(iou)),
        "aAcc": 100 * float(m["aAcc"]) if area_label.sum() else None,
    }


def mean_iou(pred: Any, label: Any) -> float | None:
    """mIoU (percent) of ``pred`` against ``label``; None when no pixel is labelled."""
    return iou_metrics(confusion_matrix(pred, label))["mIoU"]
