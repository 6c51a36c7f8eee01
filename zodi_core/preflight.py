"""Checks before any heavy work: every problem of a pipeline configuration, reported at once.

:func:`preflight` looks at what a :class:`~zodi_core.config.PipelineConfig` needs from the outside
world and returns one line per problem (empty when all is well); :func:`check_pipeline` raises
:class:`PreflightError` listing them all. It checks, in a few seconds at most:

- dataset roots: each exists and holds its layout's image and label folders;
- models: a local folder holds a diffusers layout (the files the loader needs); a hub id is in
  the local cache or the hub answers within ``network_timeout`` seconds (offline: a network message
  saying how to use a local folder instead);
- training: a ``train.pretrained`` weights file exists; the segmentation config is built as
  training builds it (name, ``--cfg-options`` keys, ZoDi's paired and the source-only pipelines,
  every transform and the model, on PyTorch's ``meta`` device: no weights loaded or allocated),
  so a bad segmentation config is found before the transfer, not after it;
- storage: the root is reachable and writable: a small probe object is written and deleted, which
  also checks S3 credentials, the bucket's existence and write permission.

Nothing here loads weights or reads an image. The segmentation check imports torch and mmseg's
registries once per process (5-17 s on the 2-core CPU, depending on its load; training pays
the same import later), then about 0.5 s per config.
"""

from __future__ import annotations

import copy
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zodi_core.config import (
    ConfigError,
    DatasetSpec,
    ModelsConfig,
    PipelineConfig,
    QualityConfig,
    StorageConfig,
    TrainConfig,
)
from zodi_core.model_source import (  # one owner of where models come from
    NETWORK_TIMEOUT,
    ModelSource,
    folder_problem,
    hub_problem,
    is_local,
    model_problems,
)

#: Key of the probe object written and deleted under the storage root.
PROBE_PREFIX = ".zodi-preflight-"


class PreflightError(ConfigError):
    """The configuration cannot run here; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(
            f"preflight: {n} problem{'s' if n != 1 else ''} to fix before running:\n  "
            + "\n  ".join(self.problems),
            self.problems,
        )


# Datasets ----------------------------------------------------------------------------------


def layout_dirs(spec: DatasetSpec) -> list[tuple[Path, str]]:
    """The folders the reader of ``spec.dataset`` needs, each with what it should hold."""
    root = Path(spec.root).expanduser()
    if spec.dataset == "cityscapes":
        return [
            (root / "leftImg8bit" / spec.split, "<city>/<frame>_leftImg8bit.png images"),
            (root / "gtFine" / spec.split, "<city>/<frame>_gtFine_labelIds.png labels"),
        ]
    if spec.dataset == "acdc":
        cond = spec.condition or "<condition>"
        return [
            (root / "rgb_anon" / cond / spec.split, "<sequence>/<name>_rgb_anon.png images"),
            (root / "gt" / cond / spec.split, "<sequence>/<name>_gt_labelTrainIds.png labels"),
        ]
    return [
        (root / "images", "<nnnnn>.png images (GTA5 layout)"),
        (root / "labels", "<nnnnn>.png labels (GTA5 layout)"),
    ]


def check_dataset(spec: DatasetSpec, field: str) -> list[str]:
    """Problems of one dataset root: missing root, a layout folder missing."""
    root = Path(spec.root).expanduser()
    if "://" in spec.root:
        return [f"{field}.root: {spec.root!r} is not a local folder; datasets are read from disk"]
    if not root.is_dir():
        return [
            f"{field}.root: dataset folder {spec.root!r} does not exist; "
            f"set {field}.root to the {spec.dataset} root"
        ]
    if spec.dataset == "acdc" and not spec.condition:
        return [f"{field}.condition: ACDC needs a condition (night, snow, rain or fog)"]
    return [
        f"{field}.root: {spec.dataset} layout folder {str(folder)!r} not found; expected {what} "
        f"under it (is {spec.root!r} the {spec.dataset} root? split {spec.split!r})"
        for folder, what in layout_dirs(spec)
        if not folder.is_dir()
    ]


# Models ------------------------------------------------------------------------------------


def check_models(
    models: ModelsConfig, field: str = "transfer.models", network_timeout: float = NETWORK_TIMEOUT
) -> list[str]:
    """Problems of the diffusion models: incomplete local folders, hub ids that cannot be loaded
    here (:func:`zodi_core.model_source.model_problems`), fields named under ``field``."""
    return model_problems(models, field.removesuffix("models"), network_timeout)


def check_quality(
    config: QualityConfig, field: str = "quality", network_timeout: float = NETWORK_TIMEOUT
) -> list[str]:
    """Problems of the scorers: a CLIP folder without its files or a hub id out of reach, a
    layout scorer checkpoint that is not there (found now, not after source-only training)."""
    problems: list[str | None] = []
    if not config.score:
        return []
    if config.clip:
        local = is_local(config.clip)
        clip = ModelSource(
            f"{field}.clip",
            str(Path(config.clip).expanduser()) if local else config.clip,
            local,
            needs=(("", (("config.json",), ("model.safetensors", "pytorch_model.bin"))),),
        )
        problems.append(folder_problem(clip) if local else hub_problem(clip, network_timeout))
    if config.seg_checkpoint and is_local(config.seg_checkpoint):
        if not Path(config.seg_checkpoint).expanduser().is_file():
            problems.append(
                f"{field}.seg_checkpoint: {config.seg_checkpoint!r} not found; set it to a "
                "checkpoint file or remove it (the run's source-only model scores by default)"
            )
    return [p for p in problems if p]


# Segmentation config -----------------------------------------------------------------------


def _build_error(build: Callable[[], Any], notes: list[str]) -> str | None:
    """The error of ``build()`` in one line, with the "did you mean" of a new ``--cfg-options``
    key that the error names; None when it builds."""
    try:
        build()
    except Exception as err:  # noqa: BLE001 - any build error is the config's problem to report
        message = " ".join(str(err).split()) or type(err).__name__
        hints = [n for n in notes if repr(n.split("'")[1].rsplit(".", 1)[-1]) in message]
        return message + "".join(f" ({n})" for n in hints)
    return None


def _build_model(registry: Any, model_cfg: Any, torch: Any) -> None:
    """Build the model on the ``meta`` device (shapes only: no memory, no weights); a model whose
    constructor reads a tensor's value (SegFormer's drop-path rates: ``Tensor.item()``) cannot
    be built there and is built on the CPU instead (random init; weights are loaded only by
    ``init_weights``, which is not called)."""
    try:
        with torch.device("meta"):
            registry.build(model_cfg)
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err):
            raise
        registry.build(model_cfg)


def check_seg_config(
    train: TrainConfig,
    field: str = "train",
    *,
    overrides: dict[str, Any] | None = None,
    source_only: bool | None = None,
    max_iters: int | None = None,
) -> list[str]:
    """Problems of the segmentation config, found by building it as training does, without
    weights: the config name, ``overrides`` (``--cfg-options``) keys, ZoDi's paired pipeline and
    the source-only one (``source_only`` None: both, as a pipeline trains both), each pipeline
    transform through mmseg's registry, the dataset type, and the model on the ``meta`` device
    (no memory, no weights: about 0.5 s for a ResNet-50 DeepLabV3+ once mmseg is imported).
    """
    import torch
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS, MODELS, TRANSFORMS
    from mmseg.utils import register_all_modules

    import zodi_core.seg  # noqa: F401 - registers ZoDi's modules in mmseg's registries
    from zodi_core.seg.adapt import adapt_config
    from zodi_core.seg.train import (
        apply_iteration_budget,
        apply_train_config,
        load_config,
        option_notes,
        set_manifests,
    )

    where = f"{field}.mmseg_config {train.mmseg_config!r}"
    try:
        base = load_config(train.mmseg_config)
        notes = option_notes(base, overrides)
        if overrides:
            base.merge_from_dict(dict(overrides), allow_list_keys=True)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as err:
        return [f"{where}: {' '.join(str(err).split())}"]
    register_all_modules(init_default_scope=False)
    iters = max_iters or train.max_iters
    # (what, message) → the builds it fails: a problem of both builds is one line
    found: dict[tuple[str, str], list[str]] = {}
    for source in (True, False) if source_only is None else (source_only,):
        build_name = "source-only" if source else "ZoDi"
        cfg = copy.deepcopy(base)
        errors: list[tuple[str, str | None]] = []
        try:
            adapt_config(cfg, train, source_only=source)
            apply_train_config(cfg, train)
            set_manifests(cfg, "preflight.parquet", "preflight.parquet")
            if iters is not None:
                apply_iteration_budget(cfg, iters)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            errors.append(("", " ".join(str(err).split())))
        else:
            dataset = cfg.train_dataloader.dataset
            with DefaultScope.overwrite_default_scope("mmseg"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if DATASETS.get(dataset.type) is None:
                    errors.append(("", f"dataset type {dataset.type!r} is not registered"))
                for t in dataset.pipeline:  # as training derives it (loaders merged, pairs)
                    name = t.get("type") if isinstance(t, dict) else t
                    build = lambda t=t: TRANSFORMS.build(t)  # noqa: E731
                    errors.append(
                        (f"train pipeline transform {name}: ", _build_error(build, notes))
                    )
                build = lambda model=cfg.model: _build_model(MODELS, model, torch)  # noqa: E731
                errors.append(("model: ", _build_error(build, notes)))
        for what, message in errors:
            if message:
                found.setdefault((what, message), []).append(build_name)
    n_builds = 2 if source_only is None else 1
    return [
        f"{where}{'' if len(builds) == n_builds else f' ({builds[0]})'}: {what}{message}"
        for (what, message), builds in found.items()
    ]


def _scorer_config_problems(seg_config: str) -> list[str]:
    """The layout scorer's mmseg config (``quality.seg_config``) exists and loads; it only
    predicts, so its model is built when it scores."""
    from zodi_core.seg.train import load_config

    try:
        load_config(seg_config)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as err:
        return [f"quality.seg_config {seg_config!r}: {' '.join(str(err).split())}"]
    return []


# Storage -----------------------------------------------------------------------------------


def check_storage(
    config: StorageConfig, field: str = "storage", connect_timeout: float = NETWORK_TIMEOUT
) -> list[str]:
    """Problems of the storage root: unreachable, bad credentials, no bucket, not writable.

    Writes and deletes one empty probe object under the root (S3: this checks credentials, the
    bucket and the write permission in one round trip each).
    """
    from zodi_core import storage

    options: dict = {}
    if config.root.startswith("s3://"):
        options = {
            "endpoint_url": config.endpoint_url,
            "region": config.region,
            "connect_timeout": connect_timeout,
            "read_timeout": max(connect_timeout, 10.0),
            "max_attempts": 1,
        }
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        store = storage.open_storage(config.root, **options)
        store.put_bytes(key, b"")
        store.delete(key)
    except (storage.StorageError, OSError, ValueError) as err:
        message = " ".join(str(err).replace(key, f"{PROBE_PREFIX}*").split())
        message = message or type(err).__name__
        return [f"{field}.root {config.root!r}: cannot write a probe object: {message}"]
    return []


# All of it ---------------------------------------------------------------------------------


def preflight(
    config: PipelineConfig,
    *,
    network_timeout: float = NETWORK_TIMEOUT,
    checks: tuple[str, ...] = ("datasets", "models", "train", "seg", "quality", "storage"),
) -> list[str]:
    """Every problem that would stop ``config`` from running here, one line each (empty: none)."""
    problems: list[str] = []
    guard: Callable[[Callable[[], list[str]], str], None]

    def guard(check: Callable[[], list[str]], what: str) -> None:
        try:
            problems.extend(check())
        except Exception as err:  # noqa: BLE001 - a check that breaks is itself a problem
            problems.append(f"{what}: check failed: {type(err).__name__}: {err}")

    if "datasets" in checks:
        specs = [("source", config.source)]
        if config.source_val is not None:
            specs.append(("source_val", config.source_val))
        specs += [(f"targets[{i}]", t) for i, t in enumerate(config.targets)]
        seen: set[tuple] = set()
        for field, spec in specs:
            ident = (spec.dataset, spec.root, spec.split, spec.condition)
            if ident not in seen:
                seen.add(ident)
                guard(lambda s=spec, f=field: check_dataset(s, f), field)
    if "models" in checks:
        guard(lambda: check_models(config.transfer.models, "transfer.models", network_timeout),
              "transfer.models")  # fmt: skip
    if "train" in checks and config.train.pretrained:
        path = Path(config.train.pretrained).expanduser()
        if not path.is_file():
            problems.append(
                f"train.pretrained: backbone weights {config.train.pretrained!r} not found; "
                "set it to a local .pth file or remove it"
            )
    if "seg" in checks:
        guard(lambda: check_seg_config(config.train, "train"), "train.mmseg_config")
        if config.quality.score and config.quality.seg_config:
            guard(lambda: _scorer_config_problems(config.quality.seg_config), "quality")
    if "quality" in checks:
        guard(lambda: check_quality(config.quality, "quality", network_timeout), "quality")
    if "storage" in checks:
        guard(lambda: check_storage(config.storage, "storage", network_timeout), "storage")
    return problems


def check_pipeline(config: PipelineConfig, **kwargs) -> None:
    """Raise :class:`PreflightError` listing every problem :func:`preflight` finds."""
    problems = preflight(config, **kwargs)
    if problems:
        raise PreflightError(problems)
