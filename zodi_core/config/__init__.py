"""Typed, frozen configuration for every stage of the pipeline.

Each config is a pydantic model (frozen, unknown keys rejected) whose fields carry a one-line
doc. Named presets (``paper``, ``default``, ``demo``) are built by :func:`preset` functions with
keyword overrides::

    TransferConfig.preset("paper", num_inference_steps=2)
    PipelineConfig.from_yaml("configs/cityscapes_to_acdc_night.yaml")

Validation errors are raised as :class:`ConfigError` (a ``ValueError``) naming the field, what
was expected and what was received. :func:`config_digest` is the one stable hash of an
effective config, used for caching and lineage.

By job: :mod:`~zodi_core.config.base` (the model class, field types, errors, digest),
:mod:`~zodi_core.config.transfer` (domains, models, transfer) and
:mod:`~zodi_core.config.pipeline` (train, evaluation, storage, report, datasets, quality,
the pipeline); every public name is importable from ``zodi_core.config``.
"""

from zodi_core.config.base import (
    ConfigError,
    Device,
    FileName,
    NonEmptyStr,
    NonEmptyTuple,
    PresetName,
    Seed32,
    config_digest,
)
from zodi_core.config.base import (
    _Config as _Config,  # the base class, for configs outside this package (prompts)
)
from zodi_core.config.pipeline import (
    ACDC_CONDITIONS,
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
    DOMAIN_NAME_RE,
    DOMAIN_NAME_RULE,
    DOMAIN_PHRASES,
    DOMAIN_STRENGTHS,
    DOMAINS,
    SD15_MODEL_ID,
    TRANSFER_SPEED_LEVERS,
    USER_DOMAIN_STRENGTH,
    DomainName,
    DomainSettings,
    ModelsConfig,
    TransferConfig,
    check_domain_name,
    choose_prompt,
)

__all__ = [
    "ACDC_CONDITIONS",
    "CLIP_MODEL_ID",
    "CONTROLNET_SEG_ID",
    "ConfigError",
    "DOMAINS",
    "DOMAIN_NAME_RE",
    "DOMAIN_NAME_RULE",
    "DOMAIN_PHRASES",
    "DOMAIN_STRENGTHS",
    "DatasetSpec",
    "Device",
    "DomainName",
    "DomainSettings",
    "EvalConfig",
    "FileName",
    "ModelsConfig",
    "NonEmptyStr",
    "NonEmptyTuple",
    "PipelineConfig",
    "PresetName",
    "QualityConfig",
    "ReportConfig",
    "SD15_MODEL_ID",
    "Seed32",
    "StorageConfig",
    "TRANSFER_SPEED_LEVERS",
    "TrainConfig",
    "TransferConfig",
    "USER_DOMAIN_STRENGTH",
    "check_domain_name",
    "choose_prompt",
    "config_digest",
]
