"""Typed, frozen configuration for every stage of the pipeline (pydantic models, unknown keys
rejected, every field bounded), with named presets and keyword overrides::

    TransferConfig.preset("paper", num_inference_steps=2)
    PipelineConfig.from_yaml("configs/cityscapes_to_acdc_night.yaml")

An invalid config raises one :class:`ConfigError` listing every bad field, one line each. By job:
:mod:`~zodi_core.config.base` (model class, field types, errors, digest),
:mod:`~zodi_core.config.transfer` (domains, models, transfer), :mod:`~zodi_core.config.pipeline`
(train, evaluation, storage, report, datasets, quality, the pipeline).
"""

from zodi_core.config.base import ConfigError, config_digest
from zodi_core.config.base import _Config as _Config  # the base class, for configs elsewhere
from zodi_core.config.pipeline import (
    DatasetSpec,
    EvalConfig,
    PipelineConfig,
    QualityConfig,
    ReportConfig,
    StorageConfig,
    TrainConfig,
)
from zodi_core.config.transfer import (
    CLIP_MODEL_ID,
    CONTROLNET_SEG_ID,
    DOMAIN_PHRASES,
    DOMAINS,
    SD15_MODEL_ID,
    TRANSFER_SPEED_LEVERS,
    DomainSettings,
    ModelsConfig,
    TransferConfig,
    check_domain_name,
    choose_prompt,
)

__all__ = [
    "CLIP_MODEL_ID",
    "CONTROLNET_SEG_ID",
    "ConfigError",
    "DOMAINS",
    "DOMAIN_PHRASES",
    "DatasetSpec",
    "DomainSettings",
    "EvalConfig",
    "ModelsConfig",
    "PipelineConfig",
    "QualityConfig",
    "ReportConfig",
    "SD15_MODEL_ID",
    "StorageConfig",
    "TRANSFER_SPEED_LEVERS",
    "TrainConfig",
    "TransferConfig",
    "check_domain_name",
    "choose_prompt",
    "config_digest",
]
