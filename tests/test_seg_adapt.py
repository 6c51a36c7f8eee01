"""ZoDi added in code to any mmseg config: paired pipeline derivation, stock model-zoo configs
(DeepLabV3+, PSPNet, SegFormer) trained on tiny data, TrainConfig as the one owner of λ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mmcv.transforms import Compose
from mmseg.registry import TRANSFORMS
from seg_testdata import (
    save_png,
    scene,
    torch_single_thread,  # noqa: F401  (autouse fixture)
    transfer_row,
    write_dataset,
)

from zodi_core.config import ConfigError, TrainConfig
from zodi_core.labels import train_ids_to_label_ids
from zodi_core.seg.adapt import adapt_config, derive_paired_pipeline
from zodi_core.seg.train import load_config, resolve_config_path, train_model

DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"
#: One stock mmseg model-zoo config per family, and the overrides (keys of the stock configs)
#: that shrink them to tiny CPU data without downloads.
STOCK = {
    "deeplabv3plus": (
        "mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py",
        {"model.pretrained": None},
    ),
    "pspnet": ("pspnet_r50-d8_4xb2-40k_cityscapes-512x1024", {"model.pretrained": None}),
    "segformer": (
        "mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py",
        {"model.backbone.init_cfg": None},
    ),
}
TINY = {
    "train_dataloader.dataset.pipeline.2.scale": (128, 64),
    "train_dataloader.dataset.pipeline.3.crop_size": (32, 64),
    "model.data_preprocessor.size": (32, 64),
    "train_dataloader.batch_size": 2,  # BatchNorm of the pooled ASPP/PPM branch needs 2
    "train_dataloader.num_workers": 0,
    "train_dataloader.persistent_workers": False,
}
#: mmseg's Cityscapes train pipeline (configs/_base_/datasets/cityscapes.py), as a stock config
#: has it.
STOCK_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(128, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=(32, 48), cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_data")
    return write_dataset(root, n=2, height=64, width=128)


def test_derived_paired_pipeline_is_the_hand_written_one_of_the_bundled_configs():
    cfg = adapt_config(load_config(DEMO))
    geometric = [
        dict(type="Resize", scale=(128, 64), keep_ratio=False),
        dict(type="RandomCrop", crop_size=(48, 96), cat_max_ratio=1.0),
        dict(type="RandomFlip", prob=0.5),
    ]
    jitter = dict(brightness=0.5, contrast=0.5, saturation=0.5)
    assert cfg.train_dataloader.dataset.type == "ZoDiPairedDataset"
    assert cfg.train_dataloader.dataset.pipeline == [
        dict(type="LoadZoDiPair"),
        dict(type="ZoDiPairedTransforms", transforms=geometric),
        dict(type="ZoDiColorJitter", keys=("img", "gen_img"), **jitter),
        dict(type="PackZoDiPairInputs"),
    ]


def test_stock_pipeline_pairs_geometry_and_draws_photometry_per_image(tmp_path):
    paired = derive_paired_pipeline(STOCK_PIPELINE)
    assert [t["type"] for t in paired] == [
        "LoadZoDiPair", "ZoDiPairedTransforms", "ZoDiEachImage", "PackZoDiPairInputs",
    ]  # fmt: skip
    assert [t["type"] for t in paired[1]["transforms"]] == [
        "RandomResize",
        "RandomCrop",
        "RandomFlip",
    ]
    # A "generated" image identical to its source: after the paired geometric transforms both
    # must still be identical (same scale, crop box and flip), for every random draw.
    rgb, train = scene(3, 64, 128)
    img = save_png(tmp_path / "img.png", rgb)
    lab = save_png(tmp_path / "lab.png", train_ids_to_label_ids(train))
    item = {**transfer_row("a", img, lab, img), "img_path": img, "gen_path": img,
            "seg_map_path": lab}  # fmt: skip
    geometric_only = Compose([TRANSFORMS.build(t) for t in paired[:2]])
    for _ in range(5):
        out = geometric_only(dict(item))
        assert out["img"].shape[:2] == out["gt_seg_map"].shape == (32, 48)
        np.testing.assert_array_equal(out["img"], out["gen_img"])
    full = Compose([TRANSFORMS.build(t) for t in paired])
    differ = 0
    for _ in range(5):
        out = full(dict(item))
        img_t, gen_t = out["inputs"], out["gen_inputs"]
        assert img_t.shape == gen_t.shape == (3, 32, 48)
        differ += int(not np.array_equal(img_t.numpy(), gen_t.numpy()))
    assert differ >= 4, "PhotoMetricDistortion drew the same jitter for source and generated"


def test_pairing_refuses_mixing_transforms_and_wrong_class_counts():
    with pytest.raises(ConfigError, match=r"pipeline\.2: RandomMosaic cannot be applied to pairs"):
        derive_paired_pipeline([*STOCK_PIPELINE[:2], dict(type="RandomMosaic", prob=1.0),
                                STOCK_PIPELINE[-1]])  # fmt: skip
    cfg = load_config(DEMO, {"model.decode_head.num_classes": 150})
    with pytest.raises(ConfigError, match=r"model.decode_head.num_classes: expected 19.*150"):
        adapt_config(cfg)


def test_train_config_is_the_one_owner_of_zodi_settings():
    tc = TrainConfig(lambda_sim=0.3, scheme="concat", feature_stage=2)
    cfg = adapt_config(load_config(DEMO), tc)
    assert (cfg.model.type, cfg.model.lambda_sim, cfg.model.scheme, cfg.model.feature_stage) == (
        "ZoDiSegmentor", 0.3, "concat", 2,
    )  # fmt: skip
    # A hand-written ZoDi config keeps its structure, but its λ comes from TrainConfig too.
    wrapped = adapt_config(load_config(DEMO), TrainConfig(lambda_sim=0.5))
    again = adapt_config(wrapped, tc)
    assert again.model.lambda_sim == 0.3 and again.model.segmentor.type == "EncoderDecoder"
    baseline = adapt_config(load_config(DEMO), tc, source_only=True)
    assert baseline.model.type == "EncoderDecoder"
    assert baseline.train_dataloader.dataset.type == "ZoDiManifestDataset"
    with pytest.raises(ConfigError, match="--source-only: the config is itself a ZoDi config"):
        adapt_config(wrapped, tc, source_only=True)


def test_an_old_bundled_config_name_is_answered_with_the_closest_one():
    # the 0.1.0 rename table is gone (issue 20); the ordinary "did you mean" finds the new name
    with pytest.raises(FileNotFoundError, match=rf"did you mean {DEMO!r}"):
        resolve_config_path("deeplabv3plus_r18-tiny_zodi_2xb-demo_synthetic-64x128.py")


@pytest.mark.parametrize("family", sorted(STOCK))
def test_stock_mmseg_config_trains_with_zodi_and_source_only(family, data, tmp_path):
    name, weights = STOCK[family]
    assert resolve_config_path(name).is_file()
    overrides = {**TINY, **weights}
    out = train_model(name, data["paired"], str(tmp_path / "zodi"), max_iters=2,
                      overrides=overrides)  # fmt: skip
    assert Path(out["checkpoint"]).name == "iter_2.pth" and out["iterations"] == 2
    assert {"loss_sim", "ce_src", "ce_gen"} <= set(out["losses"])
    assert all(np.isfinite(v) for v in out["losses"].values())
    base = train_model(name, data["paired"], str(tmp_path / "base"), max_iters=1,
                       overrides=overrides, source_only=True)  # fmt: skip
    assert base["source_only"] and "loss_sim" not in base["losses"]
    assert Path(base["checkpoint"]).is_file()


def test_train_model_refuses_cuda_on_a_machine_without_it(data, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: 'cuda' asked for, but no CUDA device"):
        train_model(DEMO, data["paired"], str(tmp_path), max_iters=1,
                    train_config=TrainConfig(device="cuda"))  # fmt: skip
    with pytest.raises(ValueError, match="dtype: 'float16' on CPU is not supported"):
        train_model(DEMO, data["paired"], str(tmp_path), max_iters=1,
                    train_config=TrainConfig(device="cpu", dtype="float16"))  # fmt: skip


def test_source_only_reads_a_samples_manifest(data, tmp_path):
    out = train_model(DEMO, None, str(tmp_path / "w"), max_iters=1, source_only=True,
                      source_manifest_uri=data["samples"])  # fmt: skip
    assert out["iterations"] == 1


def test_train_config_refuses_a_negative_lambda():
    with pytest.raises(ConfigError, match="lambda_sim"):
        TrainConfig(lambda_sim=-1.0)


def test_vis_backends_are_selectable_and_a_missing_package_is_named(monkeypatch):
    import importlib.util

    from zodi_core.seg.train import apply_vis_backends

    cfg = load_config(DEMO)
    apply_vis_backends(cfg, ("local",))
    assert [b["type"] for b in cfg.visualizer.vis_backends] == ["LocalVisBackend"]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: real(n, *a) if n != "mlflow" else None
    )
    with pytest.raises(ConfigError, match=r"'mlflow' needs the mlflow package.*pip install mlflow"):
        apply_vis_backends(cfg, ("local", "mlflow"))
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "tensorboard" else real(n, *a)
    )
    apply_vis_backends(cfg, ("local", "tensorboard"))
    assert [b["type"] for b in cfg.visualizer.vis_backends] == [
        "LocalVisBackend",
        "TensorboardVisBackend",
    ]
