"""zodi_core.metrics: the one confusion matrix and mIoU, against MMSeg's IoUMetric and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmseg.evaluation import IoUMetric

from zodi_core.labels import IGNORE_INDEX, NUM_CLASSES
from zodi_core.metrics import confusion_matrix, iou_metrics, mean_iou


def _pairs(seed: int, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Predictions that mostly agree with their labels; labels with an ignored band."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = rng.integers(0, 7, (24, 40))
        label[:, :3] = IGNORE_INDEX
        pred = np.where(rng.random(label.shape) < 0.6, label % NUM_CLASSES, rng.integers(0, 9))
        out.append((pred, label))
    return out


def test_confusion_areas_and_metrics_equal_mmseg_iou_metric_exactly():
    """Summed over images, the confusion matrix gives MMSeg's four area vectors, and
    iou_metrics gives what IoUMetric computes from them (what evaluation reported before)."""
    pairs = _pairs(0)
    cm = sum(confusion_matrix(p, t) for p, t in pairs)
    areas = [torch.zeros(NUM_CLASSES, dtype=torch.float64) for _ in range(4)]
    for p, t in pairs:
        got = IoUMetric.intersect_and_union(
            torch.from_numpy(p), torch.from_numpy(t), NUM_CLASSES, IGNORE_INDEX
        )
        areas = [a + g.double() for a, g in zip(areas, got, strict=True)]
    intersect, union, area_pred, area_label = (a.long().numpy() for a in areas)
    np.testing.assert_array_equal(np.diag(cm), intersect)
    np.testing.assert_array_equal(cm.sum(axis=0), area_pred)
    np.testing.assert_array_equal(cm.sum(axis=1), area_label)
    np.testing.assert_array_equal(cm.sum(0) + cm.sum(1) - np.diag(cm), union)
    ref = IoUMetric.total_area_to_metrics(*(torch.from_numpy(a) for a in (
        intersect, union, area_pred, area_label)), ["mIoU"])  # fmt: skip
    m = iou_metrics(cm)
    np.testing.assert_array_equal(m["IoU"], np.asarray(ref["IoU"], np.float64))
    assert m["mIoU"] == 100 * float(np.nanmean(np.asarray(ref["IoU"], np.float64)))
    assert m["aAcc"] == 100 * float(ref["aAcc"])
    assert np.isnan(m["IoU"][NUM_CLASSES - 1])  # in no label and no prediction: no IoU


def test_mean_iou_of_a_hand_computed_example():
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 255], [2, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 0, 0]])
    # class 0: inter 3, union 6 (pred 5 on labelled pixels, label 4); 1: 3/4; 2: 2/4
    assert mean_iou(pred, label) == pytest.approx(100 * (3 / 6 + 3 / 4 + 2 / 4) / 3, rel=1e-6)
    stack = mean_iou(np.stack([pred, pred]), np.stack([label, label]))  # (N, H, W): same
    assert stack == pytest.approx(mean_iou(pred, label), rel=1e-6)
    assert mean_iou(pred, np.full_like(label, 255)) is None
    assert iou_metrics(confusion_matrix(pred, np.full_like(label, 255)))["aAcc"] is None


def test_confusion_matrix_names_ids_outside_the_classes_and_a_shape_mismatch():
    label = np.array([[0, 1], [2, 255]])
    with pytest.raises(ValueError, match=r"pred: ids outside 0..18 and 255: \[19\]"):
        confusion_matrix(np.array([[0, 19], [2, 3]]), label)
    with pytest.raises(ValueError, match=r"label: ids outside 0..18 and 255: \[40\]"):
        confusion_matrix(np.zeros((2, 2), int), np.array([[0, 40], [1, 255]]))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3), int), label)
    # a prediction outside the classes on an ignored pixel is not counted, so not refused
    assert confusion_matrix(np.array([[0, 1], [2, 99]]), label).sum() == 3
