"""Paired and manifest datasets: join on sample_id, shared crop/flip, bad input named."""

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import TRANSFORMS
from seg_testdata import (
    sample_row,
    save_png,
    scene,
    torch_single_thread,  # noqa: F401  (autouse fixture)
    transfer_row,
    write_dataset,
)

from zodi_core.labels import train_ids_to_label_ids
from zodi_core.manifest import ManifestError, write_manifest
from zodi_core.seg.datasets import ZoDiManifestDataset, ZoDiPairedDataset, read_pairs

H, W = 64, 128


@pytest.fixture(autouse=True)
def _mmseg_scope():
    init_default_scope("mmseg")


def geometric(crop=(48, 96)):
    return [
        dict(type="Resize", scale=(W, H), keep_ratio=False),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=1.0),
        dict(type="RandomFlip", prob=0.5),
    ]


def coordinate_pair(tmp_path):
    """A source whose red/green channels encode x/y, its inverse as the "generated" image, and a
    label whose class is a function of x: after any crop/flip, every pixel can be checked."""
    ys, xs = np.mgrid[0:H, 0:W]
    src = np.stack([xs * 2, ys * 4, np.full_like(xs, 7)], axis=-1).astype(np.uint8)
    train = ((xs // 8) % 19).astype(np.uint8)
    row = transfer_row(
        "p0",
        save_png(tmp_path / "s.png", src),
        save_png(tmp_path / "l.png", train_ids_to_label_ids(train)),
        save_png(tmp_path / "g.png", 255 - src),
    )
    return write_manifest([row], str(tmp_path / "pairs.parquet"), "transfer")


def test_paired_pipeline_applies_the_same_crop_and_flip_to_both_images(tmp_path):
    manifest = coordinate_pair(tmp_path)
    ds = ZoDiPairedDataset(
        manifest=manifest,
        pipeline=[
            dict(type="LoadZoDiPair"),
            dict(type="ZoDiPairedTransforms", transforms=geometric()),
        ],
    )
    np.random.seed(0)
    origins, flips = set(), set()
    for _ in range(12):
        item = ds[0]
        src, gen, label = item["img"], item["gen_img"], item["gt_seg_map"]
        assert src.shape == gen.shape == (48, 96, 3)
        np.testing.assert_array_equal(gen, 255 - src)  # same pixels of the same scene
        x = src[..., 2].astype(int) // 2  # BGR: red channel is last, encodes x
        np.testing.assert_array_equal(label, (x // 8) % 19)  # label follows the pixels
        origins.add((int(src[0, 0, 1]), int(x.min())))
        flips.add(bool(x[0, 0] > x[0, -1]))
    assert len(origins) > 1, "the crop never moved: the test would not see misaligned crops"
    assert flips == {True, False}, "the flip was never (or always) applied"


def test_color_jitter_draws_independently_per_image(tmp_path):
    manifest = coordinate_pair(tmp_path)
    ds = ZoDiPairedDataset(
        manifest=manifest,
        pipeline=[
            dict(type="LoadZoDiPair"),
            dict(type="ZoDiColorJitter", brightness=0.5, contrast=0.5, saturation=0.5,
                 keys=("img", "gen_img")),
        ],
    )  # fmt: skip
    np.random.seed(1)
    item = ds[0]
    plain = ZoDiPairedDataset(manifest=manifest, pipeline=[dict(type="LoadZoDiPair")])[0]
    ratio_src = item["img"].astype(float).mean() / plain["img"].astype(float).mean()
    ratio_gen = item["gen_img"].astype(float).mean() / plain["gen_img"].astype(float).mean()
    assert abs(ratio_src - 1) > 1e-3 and abs(ratio_gen - 1) > 1e-3
    assert abs(ratio_src - ratio_gen) > 1e-3


def test_paired_dataset_joins_on_sample_id_not_row_order(tmp_path):
    m = write_dataset(tmp_path, n=5, height=32, width=64, shuffle=True, seed=3)
    # A second samples manifest whose rows are in yet another order.
    rows = [sample_row(f"train_{i:03d}", str(tmp_path / "src" / f"train_{i:03d}.png"),
                       str(tmp_path / "lab" / f"train_{i:03d}.png")) for i in (3, 0, 4, 1, 2)]  # fmt: skip
    src_manifest = write_manifest(rows, str(tmp_path / "src.parquet"), "samples")
    ds = ZoDiPairedDataset(
        manifest=m["paired"], source_manifest=src_manifest, pipeline=[dict(type="LoadZoDiPair")]
    )
    assert len(ds) == 5
    for idx in range(5):
        item = ds[idx]
        i = int(item["sample_id"].split("_")[1])
        rgb, train = scene(3000 + i, 32, 64)  # write_dataset draws scene 1000*seed + i
        np.testing.assert_array_equal(item["img"][..., ::-1], rgb)
        np.testing.assert_array_equal(item["gt_seg_map"], train)
        assert item["gen_path"].endswith(f"{item['sample_id']}.png")


def test_paired_dataset_keeps_ok_and_skipped_rows_only(tmp_path):
    m = write_dataset(tmp_path, n=3, height=16, width=32)
    rows = [
        transfer_row("a", "s", "l", str(tmp_path / "gen" / "train_000.png"), status="ok"),
        transfer_row("b", "s", "l", str(tmp_path / "gen" / "train_001.png"), status="skipped"),
        transfer_row("c", "s", "l", None, status="failed"),
    ]
    uri = write_manifest(rows, str(tmp_path / "mixed.parquet"), "transfer")
    assert [p["sample_id"] for p in read_pairs(uri)] == ["a", "b"]
    assert m["paired"]


def test_paired_dataset_names_missing_generated_image(tmp_path):
    rows = [transfer_row("frame_7", "s.png", "l.png", str(tmp_path / "nope.png"))]
    uri = write_manifest(rows, str(tmp_path / "p.parquet"), "transfer")
    with pytest.raises(FileNotFoundError, match="frame_7.*nope.png"):
        ZoDiPairedDataset(manifest=uri, pipeline=[])


def test_paired_dataset_rejects_empty_manifest(tmp_path):
    uri = write_manifest([], str(tmp_path / "empty.parquet"), "transfer")
    with pytest.raises(ManifestError, match="empty"):
        ZoDiPairedDataset(manifest=uri, pipeline=[])
    uri = write_manifest([], str(tmp_path / "empty_samples.parquet"), "samples")
    with pytest.raises(ManifestError, match="empty"):
        ZoDiManifestDataset(manifest=uri, pipeline=[])


def test_paired_dataset_names_sample_missing_from_source_manifest(tmp_path):
    m = write_dataset(tmp_path, n=2, height=16, width=32)
    src = write_manifest([], str(tmp_path / "none.parquet"), "samples")
    with pytest.raises(ManifestError, match="train_000.*source manifest"):
        ZoDiPairedDataset(manifest=m["paired"], source_manifest=src, pipeline=[])


def test_load_pair_refuses_images_of_different_shape_and_names_sample(tmp_path):
    rgb, train = scene(0, 32, 64)
    square = np.zeros((32, 32, 3), np.uint8)
    rows = [transfer_row("odd_one", save_png(tmp_path / "s.png", rgb),
                         save_png(tmp_path / "l.png", train_ids_to_label_ids(train)),
                         save_png(tmp_path / "g.png", square))]  # fmt: skip
    uri = write_manifest(rows, str(tmp_path / "p.parquet"), "transfer")
    ds = ZoDiPairedDataset(manifest=uri, pipeline=[dict(type="LoadZoDiPair")])
    with pytest.raises(ValueError, match="odd_one.*differ in size"):
        ds[0]


def test_load_pair_resizes_a_generated_image_at_transfer_resolution(tmp_path):
    rgb, train = scene(0, 32, 64)
    half = rgb[::2, ::2]  # same aspect, half resolution (the transfer stage's short side 512)
    rows = [transfer_row("half", save_png(tmp_path / "s.png", rgb),
                         save_png(tmp_path / "l.png", train_ids_to_label_ids(train)),
                         save_png(tmp_path / "g.png", half))]  # fmt: skip
    uri = write_manifest(rows, str(tmp_path / "p.parquet"), "transfer")
    item = ZoDiPairedDataset(manifest=uri, pipeline=[dict(type="LoadZoDiPair")])[0]
    assert item["gen_img"].shape == item["img"].shape == (32, 64, 3)


def test_load_sample_names_sample_with_unexpected_label_ids(tmp_path):
    rgb, _ = scene(0, 16, 32)
    bad = np.full((16, 32), 200, np.uint8)  # not a Cityscapes label id
    rows = [
        sample_row(
            "bad_label", save_png(tmp_path / "i.png", rgb), save_png(tmp_path / "l.png", bad)
        )
    ]
    uri = write_manifest(rows, str(tmp_path / "s.parquet"), "samples")
    ds = ZoDiManifestDataset(manifest=uri, pipeline=[dict(type="LoadZoDiSample")])
    with pytest.raises(ValueError, match="bad_label.*200"):
        ds[0]


def test_manifest_dataset_reads_the_image_column_asked_for(tmp_path):
    m = write_dataset(tmp_path, n=2, height=16, width=32)
    load = [dict(type="LoadZoDiSample", scale=(16, 8))]
    gen = ZoDiManifestDataset(manifest=m["paired"], image_column="generated_uri", pipeline=load)
    src = ZoDiManifestDataset(manifest=m["paired"], pipeline=load)
    assert gen[0]["img_path"].endswith("gen/train_000.png")
    assert src[0]["img_path"].endswith("src/train_000.png")
    assert gen[0]["img"].shape == (8, 16, 3) and gen[0]["gt_seg_map"].shape == (8, 16)
    assert gen[0]["ori_shape"] == (8, 16)


def test_paired_transforms_are_registered_for_configs():
    for name in ("LoadZoDiPair", "LoadZoDiSample", "ZoDiPairedTransforms", "ZoDiColorJitter",
                 "PackZoDiPairInputs"):  # fmt: skip
        assert TRANSFORMS.get(name) is not None, name


def test_load_sample_resizes_a_generated_image_and_its_label_to_the_eval_scale(tmp_path):
    rgb, train = scene(0, 32, 64)
    rows = [transfer_row("half", "s.png", save_png(tmp_path / "l.png", train_ids_to_label_ids(train)),
                         save_png(tmp_path / "g.png", rgb[::2, ::2]))]  # fmt: skip
    uri = write_manifest(rows, str(tmp_path / "p.parquet"), "transfer")
    proxy = ZoDiManifestDataset(manifest=uri, image_column="generated_uri",
                                pipeline=[dict(type="LoadZoDiSample", scale=(64, 32))])  # fmt: skip
    item = proxy[0]
    assert item["img"].shape == (32, 64, 3)
    np.testing.assert_array_equal(item["gt_seg_map"], train)
    unscaled = ZoDiManifestDataset(manifest=uri, image_column="generated_uri",
                                   pipeline=[dict(type="LoadZoDiSample")])  # fmt: skip
    with pytest.raises(ValueError, match="half.*32x16 but its label is 64x32"):
        unscaled[0]
