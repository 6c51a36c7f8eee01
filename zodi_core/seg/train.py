"""Training entry point: an mmseg config + manifests + a work dir → mmengine ``Runner.train()``.

:func:`train_model` is what ``zodi train`` and the Prefect task call. It

1. loads the config (a path, or a name under ``zodi_core/seg/configs``) and applies overrides,
   refusing keys that the config does not have (a misspelt ``--cfg-options`` key fails with its
   name and the closest existing key instead of silently adding a new one);
2. points the datasets at the manifests (the config holds no data paths);
3. checks the ImageNet backbone weights up front (a local file, or a URL that is cached or
   reachable) so a run never hangs on a download;
4. trains in the work dir — directly when local; in a local staging dir mirrored after every
   checkpoint by :class:`~zodi_core.seg.hooks.ZoDiSyncWorkDirHook` when it is ``s3://``;
5. resumes from the last checkpoint with ``resume=True`` (the iteration count continues), loading
   it under :func:`~zodi_core.seg.checkpoint.checkpoint_loading` (torch's weights-only loader
   with mmengine's classes allowed, in this call only).
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from zodi_core import storage
from zodi_core.config import ConfigError, TrainConfig

CONFIG_DIR = Path(__file__).parent / "configs"
PAIRED_DATASET = "ZoDiPairedDataset"
MANIFEST_DATASET = "ZoDiManifestDataset"


def resolve_config_path(config: str | os.PathLike) -> Path:
    """A config path as given, or a file name under ``zodi_core/seg/configs``."""
    path = Path(config)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / str(config)
    if bundled.is_file():
        return bundled
    names = sorted(p.name for p in CONFIG_DIR.glob("*.py"))
    close = difflib.get_close_matches(str(config), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; bundled configs: {names}"
    raise FileNotFoundError(f"config {str(config)!r}: no such file or bundled config{hint}")


def _lookup(cfg: Any, key: str) -> None:
    """Raise ConfigError unless the dotted ``key`` exists in ``cfg`` (list items by index)."""
    node = cfg
    walked = []
    for part in key.split("."):
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"config key {key!r}: {'.'.join(walked)} is a list of {len(node)} items, "
                    f"received index {part!r}"
                )
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                close = difflib.get_close_matches(part, [str(k) for k in node], n=1)
                where = ".".join(walked) or "the config"
                hint = f"; did you mean {'.'.join([*walked, close[0]])!r}?" if close else ""
                raise ConfigError(f"config key {key!r}: {where} has no key {part!r}{hint}")
            node = node[part]
        else:
            raise ConfigError(
                f"config key {key!r}: {'.'.join(walked)} is a {type(node).__name__}, not a dict"
            )
        walked.append(part)


def load_config(config: str | os.PathLike, overrides: dict[str, Any] | None = None):
    """Load an mmengine config and apply ``overrides`` ({dotted key: value}), keys checked."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(resolve_config_path(config)))
    for key in overrides or {}:
        _lookup(cfg._cfg_dict, key)
    if overrides:
        cfg.merge_from_dict(dict(overrides), allow_list_keys=True)
    return cfg


def _segmentor_cfg(cfg) -> Any:
    return cfg.model.segmentor if cfg.model.get("type") == "ZoDiSegmentor" else cfg.model


def apply_train_config(cfg, tc: TrainConfig) -> None:
    """Apply a :class:`TrainConfig` (scheme, λ, stage, epochs, batch, weights) to ``cfg``."""
    if cfg.model.get("type") == "ZoDiSegmentor":
        cfg.model.scheme = tc.scheme
        cfg.model.lambda_sim = tc.lambda_sim
        cfg.model.feature_stage = tc.feature_stage
    if tc.max_epochs is not None:
        if cfg.train_cfg.get("type") != "EpochBasedTrainLoop":
            raise ConfigError("TrainConfig.max_epochs: the config's train loop is not epoch based")
        cfg.train_cfg.max_epochs = tc.max_epochs
        for sched in cfg.param_scheduler:
            if sched.get("by_epoch", True):
                sched.end = tc.max_epochs
    if tc.batch_size is not None:
        cfg.train_dataloader.batch_size = tc.batch_size
    if tc.log_level is not None:
        cfg.log_level = tc.log_level


def apply_iteration_budget(cfg, max_iters: int) -> None:
    """Train for ``max_iters`` iterations: iteration-based loop, decay and checkpoints.

    Checkpoints every ceil(max_iters / 10) iterations (at most 10 % of the work is lost by a crash).
    """
    if max_iters < 1:
        raise ConfigError(f"max_iters: expected an integer >= 1, received {max_iters}")
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
    schedulers = []
    for sched in cfg.param_scheduler:
        sched = copy.deepcopy(dict(sched))
        sched.pop("convert_to_iter_based", None)
        sched.update(by_epoch=False, begin=0, end=max_iters)
        schedulers.append(sched)
    cfg.param_scheduler = schedulers
    hooks = cfg.default_hooks
    hooks.checkpoint.by_epoch = False
    hooks.checkpoint.interval = max(1, math.ceil(max_iters / 10))
    hooks.logger.interval = min(hooks.logger.get("interval", 50), max_iters)
    hooks.logger.log_metric_by_epoch = False
    cfg.log_processor = dict(cfg.get("log_processor", {}), by_epoch=False)


def set_manifests(
    cfg,
    paired_manifest: str | None,
    source_manifest: str | None = None,
    val_manifest: str | None = None,
) -> None:
    """Point the train (and val/test) datasets at manifests; drop validation without one."""
    ds = cfg.train_dataloader.dataset
    kind = ds.get("type")
    if kind == PAIRED_DATASET:
        if not paired_manifest:
            raise ConfigError(f"paired_manifest: the config trains on {PAIRED_DATASET}; give one")
        ds.manifest = paired_manifest
        ds.source_manifest = source_manifest
    elif kind == MANIFEST_DATASET:
        # Source-only: the samples manifest, else the source side of the paired manifest.
        manifest = source_manifest or paired_manifest
        if not manifest:
            raise ConfigError("source_manifest: give a samples manifest or a paired manifest")
        ds.manifest = manifest
    else:
        raise ConfigError(
            f"train_dataloader.dataset.type: expected {PAIRED_DATASET} or {MANIFEST_DATASET} "
            f"(training reads manifests, not folders), received {kind!r}"
        )
    if val_manifest:
        for name in ("val_dataloader", "test_dataloader"):
            if cfg.get(name) is not None:
                cfg[name].dataset.manifest = val_manifest
    else:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None


def _weights_refs(cfg) -> list[tuple[dict, str, str]]:
    """(dict, key, value) of every pretrained-weights reference of the segmentor config."""
    seg = _segmentor_cfg(cfg)
    refs = []
    if seg.get("pretrained"):
        refs.append((seg, "pretrained", seg.pretrained))
    init = seg.get("backbone", {}).get("init_cfg")
    if isinstance(init, dict) and init.get("checkpoint"):
        refs.append((init, "checkpoint", init.checkpoint))
    return refs


def _http_url(ref: str) -> str | None:
    if ref.startswith(("http://", "https://")):
        return ref
    if ref.startswith(("open-mmlab://", "openmmlab://")):
        from mmengine.runner.checkpoint import get_external_models

        return get_external_models().get(ref.split("://", 1)[1])
    return None


def _cached_path(url: str) -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def resolve_pretrained(cfg, pretrained: str | None = None, timeout: float = 5.0) -> str | None:
    """Make the backbone's ImageNet weights loadable before training starts, or fail clearly.

    ``pretrained`` (a local file) replaces the config's reference. Otherwise a URL reference must
    be in torch's hub cache or answer within ``timeout`` seconds (no network: a clear error, not a
    hang). Returns the weights used (path or URL), None when the config trains from scratch.
    """
    seg = _segmentor_cfg(cfg)
    if pretrained:
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"pretrained: backbone weights {pretrained} not found")
        seg.pretrained = None
        seg.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(pretrained))
        return str(pretrained)
    refs = _weights_refs(cfg)
    if not refs:
        return None
    _, _, ref = refs[-1]
    if ref.startswith("torchvision://"):
        raise ConfigError(
            f"backbone weights {ref}: torchvision:// needs torchvision; use the download URL "
            f"(https://download.pytorch.org/models/...) or pass --pretrained PATH"
        )
    url = _http_url(ref)
    if url is None:
        if not Path(ref).is_file():
            raise FileNotFoundError(f"backbone weights {ref} not found (pass --pretrained PATH)")
        return ref
    if _cached_path(url).is_file():
        return url
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        prefix = "model.segmentor" if cfg.model.get("type") == "ZoDiSegmentor" else "model"
        keys = [f"{prefix}.pretrained=None" if k == "pretrained" else f"{prefix}.backbone.init_cfg=None"
                for _, k, _ in refs]  # fmt: skip
        raise FileNotFoundError(
            f"backbone weights {ref}: not in the cache {_cached_path(url)} and {url} is not "
            f"reachable ({err}). Download it elsewhere and pass --pretrained PATH (or "
            f"TrainConfig.pretrained), or train from scratch with --cfg-options {' '.join(keys)}"
        ) from None
    return url


def _stage_resume(work_dir: str, staging: Path, storage_options: dict) -> str | None:
    """Download the last checkpoint of a remote work dir into ``staging``; return its path."""
    store = storage.open_storage(work_dir, **storage_options)
    if not store.exists("last_checkpoint"):
        return None
    name = store.get_bytes("last_checkpoint").decode().strip().replace("\\", "/").rsplit("/", 1)[-1]
    local = store.get_file(name, staging / name)
    (staging / "last_checkpoint").write_text(str(local))
    return str(local)


def _last_checkpoint(work_dir: Path) -> Path | None:
    marker = work_dir / "last_checkpoint"
    return Path(marker.read_text().strip()) if marker.is_file() else None


def _wait_for_unused_log_dir(work_dir: Path) -> None:
    """mmengine names each run's log folder by the second it starts (``%Y%m%d_%H%M%S``): a second
    run in the same work dir within that second would overwrite the first one's logs."""
    while (Path(work_dir) / time.strftime("%Y%m%d_%H%M%S")).exists():
        time.sleep(0.05)


def train_model(
    config_path: str | os.PathLike,
    paired_manifest_uri: str | None,
    work_dir: str,
    *,
    seed: int = 0,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    source_manifest_uri: str | None = None,
    val_manifest_uri: str | None = None,
    max_iters: int | None = None,
    train_config: TrainConfig | None = None,
    pretrained: str | None = None,
    storage_options: dict | None = None,
) -> dict[str, Any]:
    """Train (or resume) one model; return where its checkpoint and logs are.

    Args:
        config_path: mmseg config file, or a name under ``zodi_core/seg/configs``.
        paired_manifest_uri: transfer manifest of the pairs (ZoDi configs); for a source-only
            config, its source side is the training set unless ``source_manifest_uri`` is given.
        work_dir: local folder or ``s3://bucket/prefix`` for checkpoints and logs.
        seed: global seed (mmengine ``randomness.seed``).
        resume: continue from the work dir's last checkpoint (iteration count included).
        overrides: {dotted config key: value}; every key must exist in the config.
        source_manifest_uri: samples manifest of the source images (joined on sample_id).
        val_manifest_uri: samples manifest to validate on at the end of training (optional).
        max_iters: iteration budget instead of the config's epochs.
        train_config: scheme, λ, feature stage, epochs, batch size, weights of the pipeline.
        pretrained: local ImageNet backbone weights (overrides ``train_config.pretrained``).
    Returns:
        ``{"checkpoint": URI, "work_dir", "iterations", "epochs", "config"}``.
    """
    from mmengine.runner import Runner

    from zodi_core.seg.checkpoint import checkpoint_loading

    storage_options = storage_options or {}
    cfg = load_config(config_path, overrides)
    if train_config is not None:
        apply_train_config(cfg, train_config)
        pretrained = pretrained or train_config.pretrained
        if max_iters is None:
            max_iters = train_config.max_iters
    set_manifests(cfg, paired_manifest_uri, source_manifest_uri, val_manifest_uri)
    if max_iters is not None:
        apply_iteration_budget(cfg, max_iters)
    resolve_pretrained(cfg, pretrained)

    remote = work_dir.startswith("s3://")
    staging = Path(tempfile.mkdtemp(prefix="zodi-train-")) if remote else Path(work_dir)
    staging.mkdir(parents=True, exist_ok=True)
    if remote:
        cfg.custom_hooks = [
            *cfg.get("custom_hooks", []),
            dict(type="ZoDiSyncWorkDirHook", target=work_dir, storage_options=storage_options),
        ]
        if resume:
            _stage_resume(work_dir, staging, storage_options)
    if resume and _last_checkpoint(staging) is None:
        raise FileNotFoundError(f"--resume: no last_checkpoint in the work dir {work_dir}")
    cfg.work_dir = str(staging)
    cfg.resume = bool(resume)
    cfg.load_from = None
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.launcher = "none"

    _wait_for_unused_log_dir(staging)
    # mmengine keys its logger and visualizer singletons by experiment name, by default
    # "<config>_<second>": two runs of one config in one process and second (seeds, tests) would
    # share them, and the second run's logs would land in the first run's folder.
    cfg.experiment_name = f"{Path(str(cfg.filename)).stem}_{uuid.uuid4().hex[:12]}"
    try:
        runner = Runner.from_cfg(cfg)
        with checkpoint_loading():
            runner.train()
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ConfigError(f"config {config_path}: unknown key: {err}") from None
        raise
    last = _last_checkpoint(staging)
    if last is None:
        raise RuntimeError(f"training in {staging} ended without writing a checkpoint")
    checkpoint = storage.join_uri(work_dir, last.name) if remote else str(last)
    summary = {
        "checkpoint": checkpoint,
        "work_dir": work_dir,
        "iterations": runner.iter,
        "epochs": runner.epoch,
        "config": str(resolve_config_path(config_path)),
    }
    if remote:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
