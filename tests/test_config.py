"""Typed configuration: presets, overrides, validation messages, YAML and the digest."""

import pytest
import yaml

from zodi_core.config import (
    ConfigError,
    DatasetSpec,
    PipelineConfig,
    StorageConfig,
    TransferConfig,
    config_digest,
)


def test_transfer_preset_paper_matches_release_settings():
    cfg = TransferConfig.preset("paper")
    assert cfg.num_inference_steps == 20
    assert cfg.eta == 1.0
    assert cfg.guidance_scale == 9.0
    assert cfg.controlnet_conditioning_scale == 1.0
    assert cfg.palette == "cityscapes"
    assert cfg.timestep_mode == "release"
    assert cfg.seed_policy == "global" and cfg.seed == 42
    assert cfg.effective_prompt == "driving at night, best quality"
    assert cfg.negative_prompt == "lower quality, worst quality"


def test_transfer_preset_default_has_our_improvements():
    cfg = TransferConfig.preset("default")
    assert (cfg.palette, cfg.timestep_mode, cfg.seed_policy) == (
        "ade20k",
        "consistent",
        "per_image",
    )


@pytest.mark.parametrize(
    ("domain", "strength", "prompt"),
    [
        ("night", 0.90, "driving at night, best quality"),
        ("snow", 0.65, "driving in snow, best quality"),
        ("rain", 0.65, "driving under rain, best quality"),
        ("fog", 0.60, "driving in fog, best quality"),
        ("game", 0.60, "driving in a game, best quality"),
    ],
)
def test_transfer_domain_defaults(domain, strength, prompt):
    cfg = TransferConfig.preset("paper", domain=domain)
    assert cfg.effective_strength == pytest.approx(strength)
    assert cfg.effective_prompt == prompt


def test_transfer_preset_overrides_apply_and_validate():
    cfg = TransferConfig.preset("paper", num_inference_steps=2)
    assert cfg.num_inference_steps == 2 and cfg.palette == "cityscapes"
    with pytest.raises(ConfigError, match=r"num_inference_steps.*received 0"):
        TransferConfig.preset("paper", num_inference_steps=0)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"strength": 1.5}, r"strength.*\(0, 1\].*1\.5"),
        ({"strength": 0.0}, r"strength.*\(0, 1\]"),
        ({"prompt": "   "}, r"prompt.*non-empty"),
        ({"domain": "mars"}, r"domain.*'mars'"),
        ({"palette": "pascal"}, r"palette"),
        ({"guidance_scal": 3.0}, r"guidance_scal: unknown key"),
        ({"short_side": 500}, r"short_side.*multiple"),
    ],
)
def test_transfer_validation_names_field_and_value(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TransferConfig(**overrides)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match=r"\['default', 'demo', 'paper'\].*'fast'"):
        TransferConfig.preset("fast")


def test_config_is_frozen():
    cfg = TransferConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 1  # type: ignore[misc]


def test_config_digest_stable_and_sensitive():
    a = TransferConfig.preset("default")
    b = TransferConfig.preset("default")
    assert config_digest(a) == config_digest(b)
    assert len(config_digest(a)) == 16
    assert config_digest(a) != config_digest(a.replace(strength=0.5))
    assert config_digest(a) != config_digest(a.replace(prompt="driving at dusk"))
    # Key order does not matter.
    assert config_digest({"x": 1, "y": 2}) == config_digest({"y": 2, "x": 1})


def test_pipeline_from_yaml_with_preset_and_nested_override(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "preset: paper\n"
        "domains: [night, fog]\n"
        "transfer:\n  num_inference_steps: 2\n"
        "storage:\n  root: s3://bucket/zodi\n  endpoint_url: http://127.0.0.1:7480\n"
        "targets:\n  - {dataset: acdc, root: /data/acdc, condition: night, split: val}\n"
    )
    cfg = PipelineConfig.from_yaml(path)
    assert cfg.domains == ("night", "fog")
    assert cfg.transfer.num_inference_steps == 2
    assert cfg.transfer.palette == "cityscapes"  # from the paper preset
    assert cfg.train.seeds == (0, 1, 2)
    assert cfg.storage.root == "s3://bucket/zodi"
    assert cfg.targets[0].manifest_name == "acdc-night-val"
    again = PipelineConfig.from_yaml(
        _write(tmp_path / "q.yaml", yaml.safe_dump(cfg.model_dump(mode="json")))
    )
    assert config_digest(again) == config_digest(cfg)


def _write(path, text):
    path.write_text(text)
    return path


def test_pipeline_yaml_errors_name_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PipelineConfig.from_yaml(tmp_path / "missing.yaml")
    bad = _write(tmp_path / "bad.yaml", "transfer:\n  strenght: 0.5\n")
    with pytest.raises(ConfigError, match=r"transfer\.strenght: unknown key"):
        PipelineConfig.from_yaml(bad)
    notmap = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        PipelineConfig.from_yaml(notmap)


def test_dataset_spec_requires_condition_for_acdc():
    with pytest.raises(ConfigError, match="condition"):
        DatasetSpec(dataset="acdc", root="/x")


def test_storage_root_rejects_empty():
    with pytest.raises(ConfigError, match="root"):
        StorageConfig(root=" ")
