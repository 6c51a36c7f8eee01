"""Segmentation metrics, in one place (evaluation, quality scores, pocket measurements): a
confusion matrix, and MMSeg's own ``IoUMetric`` mIoU and aAcc from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zodi_core.labels import IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(
    pred: Any, label: Any, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Pixel counts of ``pred`` against ``label``: (C, C) int64, rows label, columns prediction.

    ``pred``, ``label``: integer train ids in 0..C-1 of one shape ((H, W) or (N, H, W)), array or
    tensor (counted on its device); ``ignore_index`` pixels of ``label`` are left out.
    """
    import torch

    pred = torch.as_tensor(pred).long()
    label = torch.as_tensor(label).to(pred.device).long()
    if pred.shape != label.shape:
        raise ValueError(
            f"pred: expected the label's shape {tuple(label.shape)}, received {tuple(pred.shape)}"
        )
    valid = label != ignore_index
    p, t = pred[valid], label[valid]
    for name, ids in (("label", t), ("pred", p)):
        bad = ids[(ids < 0) | (ids >= num_classes)]
        if bad.numel():
            raise ValueError(
                f"{name}: ids outside 0..{num_classes - 1} and {ignore_index}: "
                f"{sorted(set(bad.tolist()))}"
            )
    counts = torch.bincount(t * num_classes + p, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


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
    labelled = int(area_label.sum())
    return {
        "IoU": iou,
        "mIoU": None if np.isnan(iou).all() else 100 * float(np.nanmean(iou)),
        "aAcc": 100 * float(m["aAcc"]) if labelled else None,
    }


def mean_iou(pred: Any, label: Any, num_classes: int = NUM_CLASSES) -> float | None:
    """mIoU (percent) of ``pred`` against ``label``; None when no pixel is labelled."""
    return iou_metrics(confusion_matrix(pred, label, num_classes))["mIoU"]
