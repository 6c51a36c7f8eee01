"""The segmentation config, checked before any work (issue 18): ``--cfg-options`` merged as
mmengine does (new keys added, "did you mean" for a likely misspelling), and preflight building
the mmseg config (name, keys, pipelines, model on the meta device) without weights."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import yaml

from zodi_cli import main
from zodi_core.config import ConfigError, PipelineConfig, TrainConfig
from zodi_core.preflight import check_seg_config, preflight
from zodi_core.seg.train import load_config, option_notes

DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"
RELEASE = "deeplabv3plus_r50-release_4xb-100e_cityscapes-512x1024.py"


def test_cfg_options_add_a_new_key_as_mmengine_does_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new key unlike any existing one: no warning
        cfg = load_config(
            DEMO, {"model.backbone.init_cfg": None, "model.backbone.zero_init_residual": True}
        )
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.backbone.zero_init_residual is True


def test_cfg_options_warn_did_you_mean_for_a_key_close_to_an_existing_one():
    with pytest.warns(UserWarning) as caught:
        cfg = load_config(DEMO, {"model.decode_head.chanels": 8})
    assert [str(w.message) for w in caught] == [
        "config key 'model.decode_head.chanels': model.decode_head has no key 'chanels', so it is "
        "added; did you mean 'model.decode_head.channels'?"
    ]
    assert cfg.model.decode_head.chanels == 8  # merged, as mmengine would


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("param_scheduler.3.power", r"param_scheduler is a list of 1 items, received index '3'"),
        ("model.backbone.depth.x", r"model.backbone.depth is a int \(18\), not a dict"),
    ],
)
def test_cfg_options_that_mmengine_cannot_set_are_config_errors(key, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DEMO, {key: 1})


def test_option_notes_are_empty_for_existing_keys():
    assert (
        option_notes(
            load_config(DEMO), {"model.decode_head.channels": 8, "param_scheduler.0.power": 1.0}
        )
        == []
    )


def test_preflight_builds_the_demo_and_release_configs_without_weights():
    t0 = time.perf_counter()
    assert check_seg_config(TrainConfig(mmseg_config=DEMO)) == []
    # the paper's ResNet-50 set-up: built on the meta device, its ImageNet weights never fetched
    assert check_seg_config(TrainConfig(mmseg_config=RELEASE), max_iters=10) == []
    # SegFormer reads tensor values while it is built (not on meta): built on the CPU instead
    segformer = "mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py"
    assert check_seg_config(TrainConfig(mmseg_config=segformer, scheme="concat")) == []
    assert time.perf_counter() - t0 < 20


def test_preflight_names_a_bad_mmseg_config_name():
    problems = check_seg_config(
        TrainConfig(mmseg_config="deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x12.py")
    )
    assert len(problems) == 1
    assert problems[0].startswith(
        "train.mmseg_config 'deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x12.py': "
    )
    assert f"did you mean {DEMO!r}" in problems[0]


def test_preflight_names_a_cfg_options_key_the_model_does_not_take():
    problems = check_seg_config(TrainConfig(mmseg_config=DEMO), "--config",
                                overrides={"model.decode_head.chanels": 8})  # fmt: skip
    assert len(problems) == 1, problems  # one line, though both builds fail on it
    assert "unexpected keyword argument 'chanels'" in problems[0]
    assert "did you mean 'model.decode_head.channels'?" in problems[0]


def test_preflight_names_a_bad_pipeline_transform():
    cfg = load_config(DEMO)
    i = next(
        i for i, t in enumerate(cfg.train_dataloader.dataset.pipeline) if t["type"] == "RandomFlip"
    )
    problems = check_seg_config(
        TrainConfig(mmseg_config=DEMO),
        overrides={f"train_dataloader.dataset.pipeline.{i}.type": "RandomFlipp"},
    )
    assert problems and all("RandomFlipp" in p for p in problems), problems
    assert any("train pipeline transform" in p for p in problems)


def test_preflight_names_a_bad_transform_argument_in_a_config_file(tmp_path):
    bad = tmp_path / "bad_pipeline.py"
    bad.write_text(
        f"_base_ = [{str(Path(load_config(DEMO).filename))!r}]\n"
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),\n"
        "    dict(type='RandomFlip', prob=0.5, directoin='horizontal'), dict(type='PackSegInputs')]\n"
        "train_dataloader = dict(dataset=dict(pipeline=train_pipeline))\n"
    )
    problems = check_seg_config(TrainConfig(mmseg_config=str(bad)), source_only=True)
    assert len(problems) == 1 and "directoin" in problems[0], problems
    assert f"{str(bad)!r}: train pipeline transform RandomFlip: " in problems[0]


def test_zodi_pipeline_finds_a_bad_segmentation_config_in_preflight_before_ingestion(
    synthetic_root, tiny_models_dir, tmp_path, capsys
):
    config = {
        "preset": "demo",
        "source": {"dataset": "cityscapes", "root": str(synthetic_root / "cityscapes")},
        "domains": ["night"],
        "transfer": {"models": {"base": str(tiny_models_dir), "controlnet": None}},
        "train": {"mmseg_config": "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x12.py"},
        "quality": {"score": False},
        "storage": {"root": str(tmp_path / "artifacts")},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(config))
    problems = preflight(PipelineConfig.from_yaml(path), checks=("seg",))
    assert len(problems) == 1 and problems[0].startswith("train.mmseg_config"), problems
    code = main(["pipeline", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "train.mmseg_config 'deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x12.py'" in err
    assert not (tmp_path / "artifacts" / "manifests").exists()  # nothing ingested


def test_zodi_train_warns_about_a_close_new_key_and_fails_in_one_line_before_training(
    tmp_path, capsys
):
    code = main(["train", "--config", DEMO, "--paired-manifest", str(tmp_path / "none.parquet"),
                 "--work-dir", str(tmp_path / "w"), "--cfg-options", "model.decode_head.chanels=8"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "zodi train: warning: --cfg-options config key 'model.decode_head.chanels'" in err
    assert "did you mean 'model.decode_head.channels'?" in err
    assert "unexpected keyword argument 'chanels'" in err.splitlines()[-1]
    assert not (tmp_path / "w").exists()  # no training started


def test_preflight_names_a_bad_layout_scorer_config(tmp_path):
    config = PipelineConfig.preset(
        "demo",
        quality={"seg_config": "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x12.py"},
        storage={"root": str(tmp_path / "artifacts")},
    )
    problems = preflight(config, checks=("seg",))
    assert problems == [
        "quality.seg_config 'deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x12.py': config "
        "'deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x12.py': no such file, bundled config or "
        f"mmseg model-zoo config; did you mean {DEMO!r}?"
    ]
