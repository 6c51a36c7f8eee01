"""Dataset readers (real layouts, pairing by id, subsets) and the label-id table."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from zodi_core.config import DatasetSpec
from zodi_core.datasets.readers import sample_id_problem, scan_dataset
from zodi_core.labels import (
    CLASSES,
    IGNORE_INDEX,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)

# cityscapesScripts labels.py: the label ids that are evaluated, by class name.
EVALUATED = {
    7: "road", 8: "sidewalk", 11: "building", 12: "wall", 13: "fence", 17: "pole",
    19: "traffic light", 20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky",
    24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 31: "train",
    32: "motorcycle", 33: "bicycle",
}  # fmt: skip


@pytest.mark.parametrize("label_id", range(34))
def test_label_ids_to_train_ids_maps_each_id(label_id):
    label = np.full((2, 3), label_id, dtype=np.uint8)
    expected = CLASSES.index(EVALUATED[label_id]) if label_id in EVALUATED else IGNORE_INDEX
    assert (label_ids_to_train_ids(label) == expected).all()


@pytest.mark.parametrize("label_id", [34, 100, 254])
def test_label_ids_to_train_ids_rejects_ids_outside_the_table(label_id):
    label = np.array([[7, label_id]], dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"label ids outside the table: \[{label_id}\]"):
        label_ids_to_train_ids(label)


def test_train_ids_to_label_ids_round_trips_the_19_classes():
    train = np.array([list(range(19)) + [IGNORE_INDEX]], dtype=np.uint8)
    back = label_ids_to_train_ids(train_ids_to_label_ids(train))
    np.testing.assert_array_equal(back, train)


def _scan(dataset: str, root, **spec):
    return scan_dataset(DatasetSpec(dataset=dataset, root=str(root), **spec))


def test_scan_cityscapes_pairs_frames_by_id(synthetic_root):
    scan = _scan("cityscapes", synthetic_root / "cityscapes", split="train")
    assert scan.problems == []
    assert (scan.dataset, scan.split, scan.domain, scan.label_format) == (
        "cityscapes", "train", "source", "label_ids",
    )  # fmt: skip
    ids = [c.sample_id for c in scan.candidates]
    assert len(ids) == 8 and ids == sorted(ids)
    for c in scan.candidates:
        assert re.fullmatch(r"[a-z]+_\d{6}_\d{6}", c.sample_id)
        assert c.image_path.name == f"{c.sample_id}_leftImg8bit.png"
        assert c.label_path.name == f"{c.sample_id}_gtFine_labelIds.png"
        assert c.image_path.parent.name == c.label_path.parent.name == c.sample_id.split("_")[0]
    assert len(_scan("cityscapes", synthetic_root / "cityscapes", split="val").candidates) == 4


@pytest.mark.parametrize("condition", ["night", "fog", "rain", "snow"])
def test_scan_acdc_reads_each_condition(synthetic_root, condition):
    scan = _scan("acdc", synthetic_root / "acdc", condition=condition, split="val")
    assert scan.problems == []
    assert (scan.domain, scan.label_format) == (condition, "train_ids")
    assert len(scan.candidates) == 4
    for c in scan.candidates:
        assert c.image_path.name == f"{c.sample_id}_rgb_anon.png"
        assert c.label_path.name == f"{c.sample_id}_gt_labelTrainIds.png"
        assert f"/rgb_anon/{condition}/val/" in c.image_path.as_posix()


def test_scan_gta5_subset_is_seeded(synthetic_root):
    root = synthetic_root / "gta5"
    full = _scan("gta5", root)
    assert [c.sample_id for c in full.candidates] == [f"{i:05d}" for i in range(1, 9)]
    picks = {
        s: [c.sample_id for c in _scan("gta5", root, subset=4, subset_seed=s).candidates]
        for s in range(5)
    }
    assert all(
        len(p) == 4 and set(p) <= {c.sample_id for c in full.candidates} for p in picks.values()
    )
    assert picks[0] == [
        c.sample_id for c in _scan("gta5", root, subset=4, subset_seed=0).candidates
    ]
    assert len({tuple(p) for p in picks.values()}) > 1


def test_scan_gta5_subset_larger_than_dataset_is_refused(synthetic_root):
    with pytest.raises(
        ValueError, match=r"subset: expected at most the 8 images in .*images, received 9"
    ):
        _scan("gta5", synthetic_root / "gta5", subset=9)


def test_scan_pairs_by_id_not_listing_order(synthetic_copy):
    # A missing label must not shift every later image onto its neighbour's label.
    labels = sorted((synthetic_copy / "gta5/labels").glob("*.png"))
    labels[2].unlink()
    scan = _scan("gta5", synthetic_copy / "gta5")
    assert all(c.image_path.stem == c.label_path.stem for c in scan.candidates)
    assert [str(p) for p in scan.problems] == [
        f"{synthetic_copy}/gta5/images/00003.png: image without label "
        f"(expected {synthetic_copy}/gta5/labels/00003.png)"
    ]


def test_scan_cityscapes_reports_label_without_image(synthetic_copy):
    image = next((synthetic_copy / "cityscapes/leftImg8bit/train").rglob("*.png"))
    image.unlink()
    scan = _scan("cityscapes", synthetic_copy / "cityscapes", split="train")
    assert len(scan.candidates) == 7
    [problem] = scan.problems
    assert problem.path.endswith(image.name.replace("_leftImg8bit", "_gtFine_labelIds"))
    assert problem.reason == f"label without image (expected {image})"


def test_scan_cityscapes_wrong_layout_says_what_was_expected(synthetic_root):
    scan = _scan("cityscapes", synthetic_root, split="train")  # the parent folder, not cityscapes/
    assert scan.candidates == []
    assert [p.path for p in scan.problems] == [
        str(synthetic_root / "leftImg8bit/train"),
        str(synthetic_root / "gtFine/train"),
    ]
    assert "expected <root>/leftImg8bit/train/<city>/" in scan.problems[0].reason


def test_scan_acdc_empty_folder_is_a_problem(synthetic_copy):
    for sub in ("rgb_anon", "gt"):
        folder = synthetic_copy / "acdc" / sub / "fog/val"
        shutil.rmtree(folder)
        folder.mkdir()
    scan = _scan("acdc", synthetic_copy / "acdc", condition="fog", split="val")
    [problem] = scan.problems
    assert problem.path == str(synthetic_copy / "acdc/rgb_anon/fog/val")
    assert problem.reason.startswith("empty folder")


def test_scan_dataset_dispatches_on_the_spec(synthetic_root):
    spec = DatasetSpec(
        dataset="acdc", root=str(synthetic_root / "acdc"), split="val", condition="rain"
    )
    scan = scan_dataset(spec)
    assert scan.domain == "rain" and len(scan.candidates) == 4
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), subset=3)
    assert len(scan_dataset(spec).candidates) == 3


def test_scan_acdc_refuses_an_unknown_condition(synthetic_root):
    with pytest.raises(ValueError, match=r"condition: expected one of .* received '\.\./x'"):
        _scan("acdc", synthetic_root / "acdc", condition="../x", split="val")


@pytest.mark.parametrize(
    ("sample_id", "reason"),
    [
        ("", "empty"),
        ("..", "'..'"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("a\nb", "control character"),
        ("a\x7fb", "control character"),
    ],
)
def test_sample_id_problem_names_the_reason(sample_id, reason):
    assert reason in sample_id_problem(sample_id)


@pytest.mark.parametrize("sample_id", ["a:b", "aachen_000001_000019", "x y", "é.1"])
def test_sample_id_problem_accepts_other_characters(sample_id):
    assert sample_id_problem(sample_id) is None
