"""Segmentation metrics, in one place: a confusion matrix, and MMSeg's mIoU and aAcc from it.

Evaluation (:mod:`zodi_core.evaluation`), the layout scores of generated images
(:mod:`zodi_core.quality.scores`) and the pocket models' measurements
(:mod:`zodi_core.pocket.measure`) all count pixels with :func:`confusion_matrix` and turn the
counts into IoU with :func:`iou_metrics`, which hands MMSeg's four area vectors to
``IoUMetric.total_area_to_metrics``: a class absent from both the labels and the predictions has
no IoU (NaN) and is left out of the mean, as MMSeg's per-dataset mIoU does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zodi_core.labels import IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(
    pred: Any, label: Any, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Pixel counts of ``pred`` against ``label``: (C, C) int64, rows label, columns prediction.

    Args:
        pred: integer train ids in 0..C-1, any shape ((H, W), (N, H, W)); array or tensor
            (counted on the tensor's device).
        label: integer train ids of ``pred``'s shape, ``ignore_index`` = not labelled (left out).
    Raises:
        ValueError: the shapes differ, or an id is outside 0..C-1 (the message lists them).
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
    """MMSeg's metrics of a (C, C) confusion matrix (:func:`confusion_matrix`, summed over images).

    Returns:
        ``{"IoU": (C,) float IoU in [0, 1], NaN for a class absent from labels and predictions,
        "mIoU": mean of the non-NaN IoUs in percent (None: none), "aAcc": pixel accuracy in
        percent (None: no labelled pixel)}``.
    """
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
    """mIoU (percent) of ``pred`` against ``label`` over all their pixels (see
    :func:`confusion_matrix`); None when no pixel is labelled."""
    return iou_metrics(confusion_matrix(pred, label, num_classes))["mIoU"]
