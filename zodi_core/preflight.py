"""Checks before any heavy work: every problem of a pipeline configuration, reported at once.

:func:`preflight` returns one line per problem (empty when all is well), :func:`check_pipeline`
raises :class:`PreflightError` listing them: dataset layout folders (as the readers expect them),
models (:func:`zodi_core.model_source.model_problems`), backbone weights, the segmentation
config built as training builds it but without weights (:func:`check_seg_config`), the scorers,
and a probe object written to and deleted from the storage root. No weights loaded, no image read;
the segmentation check imports torch and mmseg once per process (5-7 s of CPU), then ~0.2 s.
"""

from __future__ import annotations

import copy
import uuid
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from zodi_core.config import (
    ConfigError,
    DatasetSpec,
    PipelineConfig,
    QualityConfig,
    StorageConfig,
    TrainConfig,
)
from zodi_core.datasets.readers import scan_dataset
from zodi_core.model_source import (  # one owner of where models come from
    NETWORK_TIMEOUT,
    ModelSource,
    is_local,
    model_problems,
    source_problem,
)

PROBE_PREFIX = ".zodi-preflight-"  # the probe object's key under the storage root


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


def check_dataset(spec: DatasetSpec, field: str) -> list[str]:
    """Problems of one dataset root: not a local folder, missing, or without a layout folder its
    reader expects (:func:`zodi_core.datasets.readers.scan_dataset`: lists files, reads none)."""
    if "://" in spec.root:
        return [f"{field}.root: {spec.root!r} is not a local folder; datasets are read from disk"]
    if not Path(spec.root).expanduser().is_dir():
        return [
            f"{field}.root: dataset folder {spec.root!r} does not exist; "
            f"set {field}.root to the {spec.dataset} root"
        ]
    spec = spec.model_copy(update={"root": str(Path(spec.root).expanduser())})
    return [  # a missing folder; a file's own problem is ingestion's to report
        f"{field}.root: {spec.dataset} layout folder {problem} (is {spec.root!r} the "
        f"{spec.dataset} root? split {spec.split!r})"
        for problem in scan_dataset(spec).problems
        if not Path(problem.path).exists()
    ]


def check_quality(config: QualityConfig, network_timeout: float = NETWORK_TIMEOUT) -> list[str]:
    """Problems of the scorers (when scoring is on), found before source-only training: a CLIP
    folder without its files or a hub id out of reach, a layout scorer checkpoint not there."""
    if not config.score:
        return []
    problems = []
    if config.clip:
        needs = {"": (("config.json",), ("model.safetensors", "pytorch_model.bin"))}
        clip = ModelSource.of("quality.clip", config.clip, needs)
        problems.append(source_problem(clip, network_timeout))
    checkpoint = config.seg_checkpoint
    if checkpoint and is_local(checkpoint) and not Path(checkpoint).expanduser().is_file():
        problems.append(
            f"quality.seg_checkpoint: {checkpoint!r} not found; set it to a checkpoint file or "
            "remove it (the run's source-only model scores by default)"
        )
    return [p for p in problems if p]


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _load_problems(mmseg_config: str, field: str, overrides: dict | None = None) -> tuple:
    """(the loaded config with ``overrides`` merged, the "did you mean" notes of new keys, [])
    or (None, [], [the problem]) when ``mmseg_config`` is not found or does not load."""
    from zodi_core.seg import train as seg_train

    try:
        cfg = seg_train.load_config(mmseg_config)
        notes = seg_train.option_notes(cfg, overrides)
        cfg.merge_from_dict(dict(overrides or {}), allow_list_keys=True)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as err:
        return None, [], [f"{field} {mmseg_config!r}: {_one_line(err)}"]
    return cfg, notes, []


def _build_error(what: str, build: Callable[[], Any], notes: list[str]) -> str | None:
    """``what`` and the error of ``build()`` in one line, with the "did you mean" of a new
    ``--cfg-options`` key that the error names; None when it builds."""
    try:
        build()
    except Exception as err:  # noqa: BLE001 - any build error is the config's problem to report
        hints = [n for n in notes if repr(n.split("'")[1].rsplit(".", 1)[-1]) in _one_line(err)]
        return what + _one_line(err) + "".join(f" ({n})" for n in hints)
    return None


def _build_model(registry: Any, model_cfg: Any, torch: Any) -> None:
    """Build the model on the ``meta`` device (no memory, no weights); a constructor that reads a
    tensor's value (SegFormer's drop-path rates) builds on the CPU (``init_weights`` not called)."""
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
    the source-only one (``source_only`` None: both, as a pipeline trains both), every pipeline
    transform, the dataset type, and the model on the ``meta`` device."""
    import torch
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS, MODELS, TRANSFORMS
    from mmseg.utils import register_all_modules

    from zodi_core.seg import train as seg_train  # registers ZoDi's modules in mmseg's registries
    from zodi_core.seg.adapt import adapt_config

    where = f"{field}.mmseg_config {train.mmseg_config!r}"
    base, notes, problems = _load_problems(train.mmseg_config, f"{field}.mmseg_config", overrides)
    if problems:
        return problems
    register_all_modules(init_default_scope=False)
    builds = (True, False) if source_only is None else (source_only,)
    found: dict[str, list[str]] = {}  # problem → the builds it fails
    for source in builds:
        cfg = copy.deepcopy(base)
        errors: list[str | None] = []
        try:
            adapt_config(cfg, train, source_only=source)
            seg_train.apply_train_config(cfg, train)
            seg_train.set_manifests(cfg, "preflight.parquet", "preflight.parquet")
            if (iters := max_iters or train.max_iters) is not None:
                seg_train.apply_iteration_budget(cfg, iters)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            errors.append(_one_line(err))
        else:
            dataset = cfg.train_dataloader.dataset
            with DefaultScope.overwrite_default_scope("mmseg"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if DATASETS.get(dataset.type) is None:
                    errors.append(f"dataset type {dataset.type!r} is not registered")
                for t in dataset.pipeline:  # as training derives it (loaders merged, pairs)
                    name = t.get("type") if isinstance(t, dict) else t
                    what = f"train pipeline transform {name}: "
                    errors.append(_build_error(what, partial(TRANSFORMS.build, t), notes))
                model = partial(_build_model, MODELS, cfg.model, torch)
                errors.append(_build_error("model: ", model, notes))
        for message in filter(None, errors):
            found.setdefault(message, []).append("source-only" if source else "ZoDi")
    return [  # a problem of both builds is one line
        f"{where}{'' if len(failed) == len(builds) else f' ({failed[0]})'}: {message}"
        for message, failed in found.items()
    ]


def check_storage(
    config: StorageConfig, field: str = "storage", connect_timeout: float = NETWORK_TIMEOUT
) -> list[str]:
    """Problems of the storage root (unreachable, bad credentials, no bucket, not writable): one
    empty probe object written and deleted, one round trip each on S3, without retries."""
    from zodi_core import storage

    s3 = config.root.startswith("s3://")
    timeouts = {"connect_timeout": connect_timeout, "read_timeout": max(connect_timeout, 10.0)}
    options = {**config.storage_options(), **timeouts, "max_attempts": 1} if s3 else {}
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        store = storage.open_storage(config.root, **options)
        store.put_bytes(key, b"")
        store.delete(key)
    except (storage.StorageError, OSError, ValueError) as err:
        message = " ".join(str(err).replace(key, f"{PROBE_PREFIX}*").split()) or type(err).__name__
        return [f"{field}.root {config.root!r}: cannot write a probe object: {message}"]
    return []


def preflight(
    config: PipelineConfig,
    *,
    network_timeout: float = NETWORK_TIMEOUT,
    checks: tuple[str, ...] = ("datasets", "models", "train", "seg", "quality", "storage"),
) -> list[str]:
    """Every problem that would stop ``config`` from running here, one line each (empty: none)."""
    tasks: list[tuple[str, Callable[[], list[str]]]] = []
    if "datasets" in checks:
        specs = [("source", config.source), ("source_val", config.source_val)]
        specs += [(f"targets[{i}]", spec) for i, spec in enumerate(config.targets)]
        unique: dict[tuple, tuple] = {}  # a dataset named twice is checked once
        for f, s in specs:
            if s:
                unique.setdefault((s.dataset, s.root, s.split, s.condition), (f, s))
        tasks += [(f, partial(check_dataset, s, f)) for f, s in unique.values()]
    if "models" in checks:
        models = partial(model_problems, config.transfer.models, "transfer.", network_timeout)
        tasks.append(("transfer.models", models))
    weights = config.train.pretrained
    if "train" in checks and weights and not Path(weights).expanduser().is_file():
        missing = (
            f"backbone weights {weights!r} not found; set it to a local .pth file or remove it"
        )
        tasks.append(("train.pretrained", lambda: [f"train.pretrained: {missing}"]))
    if "seg" in checks:
        tasks.append(("train.mmseg_config", lambda: check_seg_config(config.train, "train")))
        if config.quality.score and config.quality.seg_config:  # the layout scorer only predicts
            scorer = config.quality.seg_config
            tasks.append(("quality", lambda: _load_problems(scorer, "quality.seg_config")[2]))
    if "quality" in checks:
        tasks.append(("quality", partial(check_quality, config.quality, network_timeout)))
    if "storage" in checks:
        tasks.append(("storage", lambda: check_storage(config.storage, "storage", network_timeout)))
    problems: list[str] = []
    for what, check in tasks:
        try:
            problems.extend(check())
        except Exception as err:  # noqa: BLE001 - a check that breaks is itself a problem
            problems.append(f"{what}: check failed: {type(err).__name__}: {err}")
    return problems


def check_pipeline(config: PipelineConfig, **kwargs) -> None:
    """Raise :class:`PreflightError` listing every problem :func:`preflight` finds."""
    problems = preflight(config, **kwargs)
    if problems:
        raise PreflightError(problems)
