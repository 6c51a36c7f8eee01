"""Training entry point: an mmseg config + manifests + a work dir → mmengine ``Runner.train()``.

Backbone weights are checked up front (no hang on a download); an ``s3://`` work dir trains in a
local staging dir mirrored by :class:`~zodi_core.seg.hooks.ZoDiSyncWorkDirHook`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import mmengine.device.utils as mm_device
import torch
import torch.distributed as dist
import torch.hub
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.runner.checkpoint import get_external_models

from zodi_core import storage
from zodi_core.config import ConfigError, TrainConfig
from zodi_core.device import resolve_device
from zodi_core.seg.adapt import (
    MANIFEST_DATASET,
    PAIRED_DATASET,
    adapt_config,
    replace_sync_batchnorm,
)
from zodi_core.seg.checkpoint import (
    ATOMIC_BACKEND,
    checkpoint_loading,
    checkpoint_step,
    latest_checkpoint,
)
from zodi_core.seg.resume import (
    decide_resume,
    read_settings_record,
    say,
    schedule_done,
    stage_resume,
    training_settings,
    write_settings_record,
)
from zodi_core.seg.worklock import work_dir_lock
from zodi_core.storage.local import OUT_OF_SPACE_ERRNOS, os_error

CONFIG_DIR = Path(__file__).parent / "configs"
ZOO_PREFIX = "mmseg::"
#: The model-zoo configs shipped with the installed mmsegmentation.
ZOO_DIR = Path(importlib.util.find_spec("mmseg").origin).parent / ".mim" / "configs"


def resolve_config_path(config: str | os.PathLike) -> Path:
    """A config path as given, a file under ``zodi_core/seg/configs``, or an mmseg model-zoo
    config (``mmseg::<folder>/<file>.py`` or the file name alone)."""
    text = str(config)
    rel = text.removeprefix(ZOO_PREFIX)
    zoo_only = rel != text
    for path in [ZOO_DIR / rel] if zoo_only else [Path(config), CONFIG_DIR / text]:
        if path.is_file():
            return path
    name = Path(rel).name if zoo_only else text
    zoo = sorted(ZOO_DIR.glob(f"*/{name.removesuffix('.py')}.py"))
    options = [f"{ZOO_PREFIX}{p.parent.name}/{p.name}" for p in zoo]
    if zoo_only:
        hint = f"; did you mean {options[0]!r}?" if options else ""
        raise FileNotFoundError(f"config {text!r}: no such mmseg model-zoo config{hint}")
    if len(zoo) == 1:
        return zoo[0]
    if zoo:
        raise FileNotFoundError(f"config {text!r}: several model-zoo configs match: {options}")
    names = sorted(p.name for p in CONFIG_DIR.glob("*.py"))
    close = difflib.get_close_matches(text, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; bundled configs: {names}"
    raise FileNotFoundError(
        f"config {text!r}: no such file, bundled config or mmseg model-zoo config{hint}"
    )


def option_notes(cfg: Any, overrides: dict[str, Any] | None) -> list[str]:
    """A "did you mean" note per dotted ``overrides`` key that is new to ``cfg`` but close to an
    existing key (mmengine adds new keys, as in ``model.backbone.init_cfg=None``); ConfigError
    for a key mmengine could not set."""
    notes = []
    for key in overrides or {}:
        node, walked = cfg._cfg_dict, []
        for part in key.split("."):
            where = ".".join(walked)
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"config key {key!r}: {where} is a list of {len(node)} items, "
                        f"received index {part!r}"
                    )
                node = node[int(part)]
            elif not isinstance(node, dict):
                raise ConfigError(
                    f"config key {key!r}: {where} is a {type(node).__name__} ({node!r}), not a "
                    f"dict; set {where} itself"
                )
            elif part in node:
                node = node[part]
            else:  # a new key; mmengine adds it, as intended unless it is close to an existing one
                if close := difflib.get_close_matches(part, [str(k) for k in node], n=1):
                    notes.append(
                        f"config key {key!r}: {where or 'the config'} has no key {part!r}, so it "
                        f"is added; did you mean {'.'.join([*walked, close[0]])!r}?"
                    )
                break
            walked.append(part)
    return notes


def load_config(config: str | os.PathLike, overrides: dict[str, Any] | None = None):
    """Load an mmengine config and merge ``overrides`` ({dotted key: value}) as mmengine's
    ``--cfg-options`` does, warning on likely typos (:func:`option_notes`)."""
    cfg = Config.fromfile(str(resolve_config_path(config)))
    for note in option_notes(cfg, overrides):
        warnings.warn(note, UserWarning, stacklevel=2)
    cfg.merge_from_dict(dict(overrides or {}), allow_list_keys=True)
    return cfg


def _segmentor_cfg(cfg) -> Any:
    return cfg.model.segmentor if cfg.model.get("type") == "ZoDiSegmentor" else cfg.model


def apply_train_config(cfg, tc: TrainConfig) -> None:
    """Apply a :class:`TrainConfig`'s schedule overrides (epochs, batch size, log level) to ``cfg``."""
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


#: TrainConfig.vis_backends → (mmengine backend, the package it needs).
VIS_BACKENDS = {
    "local": ("LocalVisBackend", None),
    "tensorboard": ("TensorboardVisBackend", "tensorboard"),
    "mlflow": ("MLflowVisBackend", "mlflow"),
}


def apply_vis_backends(cfg, names: tuple[str, ...]) -> None:
    """Log training scalars to these mmengine visualisation backends (packages checked first)."""
    for name in names:
        if (package := VIS_BACKENDS[name][1]) and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"TrainConfig.vis_backends: {name!r} needs the {package} package, which is not "
                f"installed (pip install {package}), or leave it out"
            )
    visualizer = cfg.get("visualizer") or dict(type="SegLocalVisualizer")
    cfg.visualizer = dict(visualizer, vis_backends=[dict(type=VIS_BACKENDS[n][0]) for n in names])


def apply_iteration_budget(cfg, max_iters: int) -> None:
    """Train for ``max_iters`` iterations, each scheduler keeping its place in the schedule and a
    checkpoint every tenth of the budget. The sampler becomes mmengine's infinite one: an
    iteration loop over the epoch sampler sleeps 2 s per pass over the data
    (``_InfiniteDataloaderIterator``), 50 s of a 100-iteration demo on 8 images.
    """
    if max_iters < 1:
        raise ConfigError(f"max_iters: expected an integer >= 1, received {max_iters}")
    loop = cfg.train_cfg
    total = int(loop.max_iters if loop.get("type") == "IterBasedTrainLoop" else loop.max_epochs)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
    schedulers, scheds = [], cfg.param_scheduler
    for sched in scheds if isinstance(scheds, list | tuple) else [scheds]:
        sched = dict(sched)  # a copy: the new list replaces the old one
        sched.pop("convert_to_iter_based", None)
        span = (sched.get("begin", 0), sched.get("end", total))  # in the old loop's units
        begin, end = (round(min(x, total) / total * max_iters) for x in span)
        schedulers.append(dict(sched, by_epoch=False, begin=begin, end=max(begin + 1, end)))
    cfg.param_scheduler = schedulers
    if (sampler := cfg.train_dataloader.get("sampler") or {}).get("type") == "DefaultSampler":
        cfg.train_dataloader.sampler = dict(
            type="InfiniteSampler", shuffle=sampler.get("shuffle", True), seed=sampler.get("seed")
        )
    hooks = cfg.default_hooks
    hooks.checkpoint.update(by_epoch=False, interval=math.ceil(max_iters / 10))  # max_iters >= 1
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
    if ds.get("type") == PAIRED_DATASET:
        if not paired_manifest:
            raise ConfigError(f"paired_manifest: the config trains on {PAIRED_DATASET}; give one")
        ds.update(manifest=paired_manifest, source_manifest=source_manifest)
    elif ds.get("type") == MANIFEST_DATASET:
        # Source-only: the samples manifest, else the source side of the paired manifest.
        if not (manifest := source_manifest or paired_manifest):
            raise ConfigError("source_manifest: give a samples manifest or a paired manifest")
        ds.manifest = manifest
    else:
        raise ConfigError(
            f"train_dataloader.dataset.type: expected {PAIRED_DATASET} or {MANIFEST_DATASET} "
            f"(training reads manifests, not folders), received {ds.get('type')!r}"
        )
    if val_manifest:
        for name in ("val_dataloader", "test_dataloader"):
            if cfg.get(name) is not None:
                cfg[name].dataset.manifest = val_manifest
    else:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None


def weights_refs(cfg) -> dict[str, str]:
    """``{key of the segmentor config: reference}`` of its pretrained-weights references."""
    seg = _segmentor_cfg(cfg)
    init = seg.get("backbone", {}).get("init_cfg")
    refs = {"pretrained": seg.get("pretrained")}
    refs["backbone.init_cfg"] = init.get("checkpoint") if isinstance(init, dict) else None
    return {key: ref for key, ref in refs.items() if ref}


def http_url(ref: str) -> str | None:
    """The download URL of a weights reference (open-mmlab:// by mmengine's table); None: a file."""
    if ref.startswith(("http://", "https://")):
        return ref
    if ref.startswith(("open-mmlab://", "openmmlab://")):
        return get_external_models().get(ref.split("://", 1)[1])
    return None


def resolve_pretrained(cfg, pretrained: str | None = None, timeout: float = 5.0) -> str | None:
    """Make the backbone's ImageNet weights loadable before training starts, or fail clearly: a
    URL must be in torch's hub cache or answer within ``timeout`` s. Returns the weights used
    (``pretrained``, a local file, replaces the config's), None when training from scratch."""
    seg = _segmentor_cfg(cfg)
    if pretrained:
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"pretrained: backbone weights {pretrained} not found")
        seg.pretrained = None
        seg.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(pretrained))
        return str(pretrained)
    if not (refs := weights_refs(cfg)):
        return None
    ref = list(refs.values())[-1]
    if ref.startswith("torchvision://"):
        raise ConfigError(
            f"backbone weights {ref}: torchvision:// needs torchvision; use the download URL "
            f"(https://download.pytorch.org/models/...) or pass --pretrained PATH"
        )
    if (url := http_url(ref)) is None:
        if not Path(ref).is_file():
            raise FileNotFoundError(f"backbone weights {ref} not found (pass --pretrained PATH)")
        return ref
    if (cached := Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file():
        return url
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        prefix = "model.segmentor" if cfg.model.get("type") == "ZoDiSegmentor" else "model"
        keys = " ".join(f"{prefix}.{key}=None" for key in refs)
        raise FileNotFoundError(
            f"backbone weights {ref}: not in the cache {cached} and {url} is not "
            f"reachable ({err}). Download it elsewhere and pass --pretrained PATH (or "
            f"TrainConfig.pretrained), or train from scratch with --cfg-options {keys}"
        ) from None
    return url


def _final_losses(runner) -> dict[str, float]:
    """The last logged value of every training loss term (``loss``, ``loss_sim``, ``ce_src``...)."""
    logged = {k[6:]: v for k, v in runner.message_hub.log_scalars.items() if k[:6] == "train/"}
    return {
        name: round(float(buffer.current()), 6)
        for name, buffer in logged.items()
        if "loss" in name or name in ("ce_src", "ce_gen", "cos_mean")
    }


def _setup_distributed(cfg, tc: TrainConfig, device, source_only: bool, work_dir: str) -> None:
    """DDP under torchrun (``launcher='pytorch'``): gloo on CPU, NCCL on CUDA."""
    if not source_only and tc.scheme != "concat":
        raise ConfigError(
            f"TrainConfig.scheme: {tc.scheme!r} cannot run under DDP (mmengine's DDP wrapper "
            f"calls forward(mode='loss'), i.e. the concat scheme); use --scheme concat with --gpus"
        )
    if work_dir.startswith("s3://"):
        raise ConfigError(
            f"work_dir {work_dir}: multi-process training needs a local (shared) folder; train "
            f"into one and copy it, or use one process for s3:// work dirs"
        )
    if device.type == "cpu":
        replace_sync_batchnorm(cfg.model)
        cfg.model_wrapper_cfg = dict(
            type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False
        )
        if not dist.is_initialized():
            # mmengine's own init calls torch.cuda.set_device, which a CPU build lacks.
            dist.init_process_group("gloo")
    else:
        cfg.env_cfg = dict(cfg.get("env_cfg", {}), dist_cfg=dict(backend="nccl"))


def train_model(
    mmseg_config: str | os.PathLike,
    paired_manifest_uri: str | None,
    work_dir: str,
    *,
    seed: int = 0,
    resume: bool | Literal["auto"] = False,
    overrides: dict[str, Any] | None = None,
    source_manifest_uri: str | None = None,
    val_manifest_uri: str | None = None,
    max_iters: int | None = None,
    train_config: TrainConfig | None = None,
    pretrained: str | None = None,
    storage_options: dict | None = None,
    source_only: bool = False,
    launcher: Literal["none", "pytorch"] = "none",
    progress: bool = False,
    lock: bool = True,
) -> dict[str, Any]:
    """Train (or resume) one model; return where its checkpoint and logs are.

    Source-only trains on ``source_manifest_uri``, else the paired manifest's source side.
    ``resume="auto"`` resumes when the work dir has a checkpoint of the same settings (decided
    under its lock; ``lock=False``: a DDP launcher took it once for all processes).
    ``launcher="pytorch"``: inside a torchrun process group (DDP).
    """
    started = time.monotonic()
    tc = train_config or TrainConfig()
    device, dtype = resolve_device(tc.device, tc.dtype, auto_half=False)
    if launcher == "pytorch" and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    cfg = load_config(mmseg_config, overrides)
    adapt_config(cfg, tc, source_only=source_only)
    apply_train_config(cfg, tc)
    apply_vis_backends(cfg, tc.vis_backends)
    set_manifests(cfg, paired_manifest_uri, source_manifest_uri, val_manifest_uri)
    if (max_iters := tc.max_iters if max_iters is None else max_iters) is not None:
        apply_iteration_budget(cfg, max_iters)
    resolve_pretrained(cfg, pretrained or tc.pretrained)
    if dtype != torch.float32:
        dtype_name = str(dtype).removeprefix("torch.")
        cfg.optim_wrapper = dict(cfg.optim_wrapper, type="AmpOptimWrapper", dtype=dtype_name)
    if launcher == "pytorch":
        _setup_distributed(cfg, tc, device, source_only, work_dir)
    sync = dict(type="ZoDiSyncWorkDirHook", target=work_dir, storage_options=storage_options)
    hooks = [sync] if (remote := work_dir.startswith("s3://")) else []
    if progress:
        interval = cfg.default_hooks.logger.get("interval", 10)  # the hook keeps it >= 1
        hooks.append(dict(type="ZoDiProgressHook", interval=interval))
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), *hooks]
    with work_dir_lock(work_dir) if lock else contextlib.nullcontext():
        staging = Path(tempfile.mkdtemp(prefix="zodi-train-")) if remote else Path(work_dir)
        staging.mkdir(parents=True, exist_ok=True)
        if remote and resume:
            stage_resume(work_dir, staging, storage_options or {})
        settings = training_settings(cfg, seed)
        last = latest_checkpoint(staging)
        resume = decide_resume(resume, last, read_settings_record(staging), settings, work_dir)
        kind, step = (checkpoint_step(last) if resume else None) or ("", None)
        is_main = int(os.environ.get("RANK", "0")) == 0
        runner = None
        # A schedule that another run (or an earlier attempt) finished leaves nothing to train.
        if not (resume and schedule_done(last, cfg.train_cfg)):
            if resume:
                unit = "epoch" if kind == "epoch" else "iteration"
                say(f"zodi train: resuming {work_dir} from {unit} {step} ({last.name})")
            elif is_main:
                # Starting over: the marker of an earlier run must not name a checkpoint of it.
                (staging / "last_checkpoint").unlink(missing_ok=True)
            if is_main:
                write_settings_record(staging, settings)
                # mmengine names a run's log folder by the second it starts (%Y%m%d_%H%M%S): a
                # second run in this work dir within that second would overwrite the first's logs.
                while (staging / time.strftime("%Y%m%d_%H%M%S")).exists():
                    time.sleep(0.05)
            cfg.update(work_dir=str(staging), resume=bool(resume), launcher=launcher)
            cfg.load_from = str(last) if resume else None  # the checkpoint chosen above
            cfg.randomness = dict(seed=seed, deterministic=False)
            if cfg.get("default_hooks", {}).get("checkpoint") is not None:
                cfg.default_hooks.checkpoint.backend_args = dict(backend=ATOMIC_BACKEND)
            runner = _run(cfg, device, staging)
            if (last := latest_checkpoint(staging)) is None:
                raise RuntimeError(f"training in {staging} ended without writing a checkpoint")
    if remote:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "checkpoint": storage.join_uri(work_dir, last.name) if remote else str(last),
        "work_dir": work_dir,
        "mmseg_config": cfg.filename,
        "source_only": source_only,
        "resumed_from": step,
        # Nothing left to train: the counts of the checkpoint that ended the schedule.
        "iterations": runner.iter if runner else (step if kind == "iter" else None),
        "epochs": runner.epoch if runner else (step if kind == "epoch" else None),
        "losses": _final_losses(runner) if runner else {},
        "seconds": round(time.monotonic() - started, 2),
    }


def _run(cfg, device, staging: Path) -> Runner:
    """Build mmengine's Runner from the final config and train; return the runner."""
    # mmengine keys its logger and visualizer singletons by experiment name, by default
    # "<config>_<second>": two runs of one config in one process and second (seeds, tests) would
    # share them, and the second run's logs would land in the first run's folder.
    cfg.experiment_name = f"{Path(str(cfg.filename)).stem}_{uuid.uuid4().hex[:12]}"
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)
    try:
        # The Runner moves the model to get_device(), a module global chosen at import (CUDA when
        # present): 'cpu' must be forced.
        with mock.patch.object(mm_device, "DEVICE", device.type):
            runner = Runner.from_cfg(cfg)
            with checkpoint_loading():
                runner.train()
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ConfigError(f"config {cfg.filename}: unknown key: {err}") from None
        raise
    except OSError as err:
        if err.errno in OUT_OF_SPACE_ERRNOS:  # a log or marker write: say where (checkpoints do)
            raise os_error(err, err.filename or staging, "training write") from err
        raise
    return runner
