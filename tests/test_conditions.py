"""Condition maps: palette colours per class, nearest-neighbour resizing, bad input."""

import numpy as np
import pytest
from mmseg.datasets import ADE20KDataset, CityscapesDataset

from zodi_core.conditions import CLASS_COLORS, palette_colors, render_condition
from zodi_core.labels import CLASSES, IGNORE_INDEX


def _all_classes_map() -> np.ndarray:
    """(2, 20) map: one pixel of each train id 0..18 and one ignored pixel, twice."""
    row = np.array([*range(19), IGNORE_INDEX], dtype=np.uint8)
    return np.stack([row, row])


def test_render_condition_ade20k_gives_each_class_its_ade20k_colour():
    rgb = render_condition(_all_classes_map(), "ade20k")
    ade_classes = list(ADE20KDataset.METAINFO["classes"])
    for train_id, name in enumerate(CLASSES):
        ade_index = ade_classes.index(CLASS_COLORS[name][1])
        expected = ADE20KDataset.METAINFO["palette"][ade_index]
        assert rgb[0, train_id].tolist() == list(expected), name
    assert rgb[0, 19].tolist() == [0, 0, 0]


def test_render_condition_cityscapes_palette_matches_mmseg():
    rgb = render_condition(_all_classes_map(), "cityscapes")
    assert rgb[0, :19].tolist() == [list(c) for c in CityscapesDataset.METAINFO["palette"]]
    assert rgb[0, 19].tolist() == [0, 0, 0]


def test_render_condition_ade20k_maps_rider_to_person_and_train_to_bus():
    lut = palette_colors("ade20k")
    idx = {name: i for i, name in enumerate(CLASSES)}
    assert lut[idx["rider"]].tolist() == lut[idx["person"]].tolist()
    assert lut[idx["train"]].tolist() == lut[idx["bus"]].tolist()
    # every other class keeps a colour of its own
    others = [tuple(lut[i]) for n, i in idx.items() if n not in ("rider", "train")]
    assert len(set(others)) == len(others)


@pytest.mark.parametrize("palette", ["ade20k", "cityscapes"])
@pytest.mark.parametrize("size", [(131, 67), (40, 17), (512, 256)])
def test_render_condition_resize_introduces_no_new_colours(palette, size):
    rng = np.random.default_rng(0)
    # blocky map with many class borders, plus ignored pixels
    ids = rng.choice([*range(19), IGNORE_INDEX], size=(12, 24)).astype(np.uint8)
    ids = np.kron(ids, np.ones((5, 5), dtype=np.uint8))
    rgb = render_condition(ids, palette, size)
    assert rgb.shape == (size[1], size[0], 3) and rgb.dtype == np.uint8
    allowed = {tuple(palette_colors(palette)[i]) for i in np.unique(ids)}
    found = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert found <= allowed


def test_render_condition_rejects_ids_outside_train_ids():
    ids = np.array([[0, 1], [19, 200]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"19, 200"):
        render_condition(ids)


def test_render_condition_rejects_non_2d_and_unknown_palette():
    with pytest.raises(ValueError, match="train_ids: expected an \\(H, W\\) map"):
        render_condition(np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="palette: expected one of .* received 'coco'"):
        render_condition(np.zeros((2, 2), dtype=np.uint8), "coco")


def test_palette_constants_equal_mmseg_metadata():
    # the constants stand in for mmseg on the transfer path: every colour and class name agrees
    assert tuple(CityscapesDataset.METAINFO["classes"]) == CLASSES
    assert tuple(CLASS_COLORS) == CLASSES
    assert [list(rgb) for rgb, _, _ in CLASS_COLORS.values()] == [
        list(c) for c in CityscapesDataset.METAINFO["palette"]
    ]
    ade = dict(
        zip(ADE20KDataset.METAINFO["classes"], ADE20KDataset.METAINFO["palette"], strict=True)
    )
    for name, (_, ade_name, color) in CLASS_COLORS.items():  # each class's ADE20K colour
        assert list(color) == list(ade[ade_name]), name
