"""The pipeline's other stages and the whole: training, evaluation, storage, report,
datasets, quality, and :class:`PipelineConfig` (YAML, presets, relative paths)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from zodi_core.config.base import (
    ConfigError,
    Device,
    Dtype,
    FileName,
    NonEmptyStr,
    NonEmptyTuple,
    Seed32,
    _Config,
    _deep_merge,
    expect,
    read_yaml_mapping,
)
from zodi_core.config.transfer import CLIP_MODEL_ID, DomainName, TransferConfig, check_prompt
from zodi_core.model_source import is_local


class TrainConfig(_Config):
    """Model adaptation (SPEC §3): the one owner of ZoDi's settings (scheme, λ, feature stage).

    ``mmseg_config`` is a plain segmentation config; ZoDi (the ``ZoDiSegmentor`` wrapper, the
    paired dataset and pipeline) is added to it in code from this config's fields, and the
    source-only baseline trains the same config without it.
    """

    mmseg_config: NonEmptyStr = Field(
        "deeplabv3plus_r50-release_4xb-100e_cityscapes-512x1024.py",
        description="mmseg config of the segmentation model: a path, a name under "
        "zodi_core/seg/configs, or an mmseg model-zoo name (mmseg::<folder>/<file>.py)",
    )
    scheme: Literal["release", "concat"] = Field(
        "release",
        description="'release': L_sim+CE(src) then a second forward for CE(gen); 'concat': one "
        "forward of the concatenated pair (differs in BatchNorm statistics; the scheme under DDP)",
    )
    lambda_sim: float = Field(0.1, ge=0.0, description="Weight λ of the similarity loss")
    feature_stage: int = Field(
        -1, ge=-8, le=7,
        description="Backbone stage whose pooled features L_sim uses (-1: the last; the "
        "backbone's stage count is checked when the model runs)",
    )  # fmt: skip
    seeds: NonEmptyTuple[Seed32] = Field((0,), description="Training seeds (paper: three)")
    max_epochs: int | None = Field(None, ge=1, description="Override the config's epochs")
    max_iters: int | None = Field(None, ge=1, description="Override with an iteration budget")
    batch_size: int | None = Field(None, ge=1, description="Override the config's batch size")
    pretrained: NonEmptyStr | None = Field(
        None, description="Local path of ImageNet backbone weights"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="mmengine console log level; None: the mmseg config's"
    )
    device: Device = Field("auto", description="'auto': CUDA when available")
    dtype: Dtype = Field("auto", description="'auto'/'float32': full precision; else AMP on CUDA")
    vis_backends: tuple[Literal["local", "tensorboard", "mlflow"], ...] = Field(
        ("local",), description="mmengine visualisation backends (local: <work_dir>/*/vis_data)"
    )

    _presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"seeds": (0, 1, 2)},
        "demo": {
            "mmseg_config": "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py",
            "log_level": "WARNING",
        },
    }


class EvalConfig(_Config):
    """Evaluation (SPEC §4)."""

    height: int = Field(512, ge=8, le=16384, description="Height images and labels are resized to")
    width: int = Field(1024, ge=8, le=16384, description="Width images and labels are resized to")
    proxy: bool = Field(True, description="Also evaluate on generated images of the source val")
    batch_size: int = Field(1, ge=1, description="Images per forward pass")
    device: Device = Field("auto", description="'auto': CUDA when available")
    dtype: Dtype = Field("auto", description="'auto'/'float32': full precision; else autocast")

    _presets: ClassVar[dict[str, dict[str, Any]]] = {"demo": {"height": 64, "width": 128}}


class StorageConfig(_Config):
    """Where artifacts go: a local folder or ``s3://bucket/prefix``."""

    root: Annotated[
        str,
        expect(
            lambda v: v.strip() and v != "s3://",
            "a folder or s3://bucket/prefix",
            lambda v: repr(v) if v.strip() else "an empty string",
        ),
    ] = Field("./zodi-demo/artifacts", description="Local folder or s3://bucket/prefix")
    endpoint_url: str | None = Field(
        None, pattern=r"^https?://[^\s/]+", description="S3-compatible endpoint (None: AWS)"
    )
    region: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="S3 region (None: from the AWS config chain)",
    )  # fmt: skip

    def storage_options(self) -> dict[str, str]:
        """The S3 options set here, for ``storage.open_storage(root, **options)`` or
        ``storage.use_options(**options)``; unset ones are left to boto3's configuration."""
        return self.model_dump(include={"endpoint_url", "region"}, exclude_none=True)


class ReportConfig(_Config):
    """How the report's Prefect artifacts show images (sample grids, confusion matrices)."""

    images: Literal["auto", "presigned", "embedded"] = Field(
        "auto",
        description="auto: presigned links for S3 roots, embedded for local ones; presigned: "
        "links only (a local root then shows paths); embedded: images inline as data URIs",
    )
    presign_expires_s: int = Field(
        7 * 24 * 3600, ge=1, le=7 * 24 * 3600,
        description="Life of a presigned image link in seconds (7 days, the S3 maximum)",
    )  # fmt: skip
    embed_max_kb: int = Field(
        200, ge=16,
        description="Size budget of the images embedded in one artifact, in kB of data URI "
        "(Prefect keeps artifacts in its database); images are downscaled and JPEG-compressed "
        "to fit, or linked when they cannot",
    )  # fmt: skip


class DatasetSpec(_Config):
    """One dataset to ingest."""

    dataset: Literal["cityscapes", "acdc", "gta5"] = Field(..., description="On-disk layout")
    root: NonEmptyStr = Field(..., description="Dataset root folder")
    split: FileName = Field("train", description="Split folder (cityscapes, acdc)")
    condition: Literal["night", "snow", "rain", "fog"] | None = Field(
        None, description="ACDC condition (its folders: rgb_anon/<condition>/...)"
    )
    subset: int | None = Field(None, ge=1, description="Random subset of this size (GTA5: 1000)")
    subset_seed: Seed32 = Field(0, description="Seed of the random subset")
    name: FileName | None = Field(
        None, description="Report and manifest name (manifests/<name>.parquet); None: derived"
    )
    domain: DomainName | None = Field(
        None,
        description="Target domain this real set evaluates (pairs it with that domain's proxy); "
        "None: the ACDC condition, 'game' for gta5, no domain for cityscapes",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.dataset == "acdc" and self.condition is None:
            raise ValueError(
                "condition: expected one of 'night', 'snow', 'rain' or 'fog' for acdc, received None"
            )
        return self

    @property
    def target_domain(self) -> str | None:
        """The domain this set evaluates: ``domain``, else derived from the dataset."""
        return self.domain or {"acdc": self.condition, "gta5": "game"}.get(self.dataset)

    @property
    def manifest_name(self) -> str:
        """Name of this dataset's samples manifest (``manifests/<name>.parquet``)."""
        derived = {"acdc": f"acdc-{self.condition}-{self.split}", "gta5": "gta5"}
        return self.name or derived.get(self.dataset, f"{self.dataset}-{self.split}")


class QualityConfig(_Config):
    """Scores of the generated images and the training filter (zodi_core.quality, issue 14)."""

    score: bool = Field(True, description="Score every generated image before ZoDi trains")
    seg_config: NonEmptyStr | None = Field(
        None, description="Layout scorer's mmseg config; None: train's"
    )
    seg_checkpoint: NonEmptyStr | None = Field(
        None, description="Layout scorer checkpoint; None: the run's source-only model"
    )
    clip: NonEmptyStr | None = Field(CLIP_MODEL_ID, description="CLIP hub id or folder; None: none")
    min_layout_miou: float | None = Field(
        None, ge=0.0, le=100.0, description="Drop rows below this layout mIoU (%)"
    )
    min_clip: float | None = Field(
        None, ge=-1.0, le=1.0, description="Drop rows below this CLIP score (cosine)"
    )
    drop_lowest_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Also drop this fraction with the lowest layout mIoU"
    )
    batch_size: int = Field(8, ge=1, description="Images per scoring batch")
    device: Device = Field("auto", description="'auto': CUDA when available")
    worst_n: int = Field(8, ge=0, description="Rows of the report's worst-generations grid")

    # demo: no CLIP download on a machine without network (the demo may pass a tiny one)
    _presets: ClassVar[dict[str, dict[str, Any]]] = {"demo": {"clip": None, "worst_n": 4}}


#: Source images per transfer shard, from the measured orchestration cost (docs/benchmarks.md,
#: bench/orchestration.py): Prefect adds 0.1-0.3 s per computed shard, so at the GPU target of
#: 0.2 s/image 32 images keep a sharded transfer within 5% of the direct loop (0.32 / (32 · 0.2));
#: a failed shard costs at most 32 images.
DEFAULT_SHARD_SIZE = 32

#: The fields :meth:`PipelineConfig.resolve_paths` makes absolute: local paths (unless a URI),
#: and model sources and mmseg configs when :func:`zodi_core.model_source.is_local` calls them
#: local (else a hub id, a bundled config or an ``mmseg::`` model-zoo name).
_PATHS = ("train.pretrained", "quality.seg_checkpoint", "storage.root")
_MODEL_SOURCES = ("transfer.models.base", "transfer.models.controlnet", "quality.clip")
_MMSEG_CONFIGS = ("train.mmseg_config", "quality.seg_config")


class PipelineConfig(_Config):
    """The whole pipeline: ingest → shard → transfer → merge → train → evaluate → report."""

    source: DatasetSpec = Field(
        default_factory=lambda: DatasetSpec(dataset="cityscapes", root="data/cityscapes"),
        description="Labelled source training set",
    )
    source_val: DatasetSpec | None = Field(None, description="Source val split (proxy evaluation)")
    targets: tuple[DatasetSpec, ...] = Field((), description="Real target sets to evaluate on")
    domains: NonEmptyTuple[DomainName] = Field(
        ("night",),
        description="Target domains to transfer to: built-in ones or names that transfer."
        "domain_settings (or transfer.prompt) gives a prompt",
    )
    transfer: TransferConfig = Field(default_factory=TransferConfig, description="Transfer")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Adaptation")
    evaluation: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Artifacts")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality control")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Report artifacts")
    shard_size: int = Field(DEFAULT_SHARD_SIZE, ge=1, description="Source images per shard")

    @model_validator(mode="after")
    def _check_domains(self) -> Self:
        for domain in self.domains:
            check_prompt("domains", domain, self.transfer)
        return self

    _presets: ClassVar[dict[str, dict[str, Any]]] = {"demo": {"shard_size": 4}}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Self:
        """Load YAML; a top-level ``preset:`` key selects the base preset (default ``default``)."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        data = read_yaml_mapping(text, f"config file {path}")
        name = data.pop("preset", "default")
        # The file's relative paths name files next to it; the caller's overrides (command-line
        # options) name files relative to the current folder.
        config = cls.preset(name, **data).resolve_paths(path.parent)
        if overrides:
            config = cls(**_deep_merge(config.model_dump(), overrides)).resolve_paths(Path.cwd())
        return config

    def resolve_paths(self, base: str | Path) -> Self:
        """This config with every relative local path (:data:`_PATHS`, dataset roots)
        made absolute against ``base``."""
        base = Path(base).expanduser().absolute()
        data = self.model_dump()
        for spec in filter(None, (data["source"], data["source_val"], *data["targets"])):
            spec["root"] = _absolute(spec["root"], base)
        for dotted in (*_PATHS, *_MODEL_SOURCES, *_MMSEG_CONFIGS):
            *parents, name = dotted.split(".")
            node = functools.reduce(dict.__getitem__, parents, data)
            node[name] = _absolute(node[name], base, source=dotted not in _PATHS)
        return type(self)(**data)


def _absolute(value: str | None, base: Path, source: bool = False) -> str | None:
    """``value`` made absolute against ``base`` (``~`` expanded) when it names a local path;
    a URI, and for a ``source`` anything not local, is left as it is."""
    if value is None or "://" in value or (source and not is_local(value, base)):
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)
