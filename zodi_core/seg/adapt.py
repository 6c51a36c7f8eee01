"""Add ZoDi to any mmseg segmentor config (ours or a stock one), in code (SPEC §3):

1. the datasets read manifests (``ZoDiPairedDataset`` for ZoDi, ``ZoDiManifestDataset``
   otherwise);
2. the pipelines are derived from the config's own: for pairs, geometric transforms are
   replayed on the generated image (same crop, same flip), photometric ones drawn per image;
3. the model is wrapped in ``ZoDiSegmentor`` with the scheme, λ and feature stage of
   :class:`~zodi_core.config.TrainConfig`, their only owner (also for an already-ZoDi config).
"""

from __future__ import annotations

import copy
from itertools import groupby
from typing import Any

from zodi_core.config import ConfigError, TrainConfig
from zodi_core.labels import NUM_CLASSES

PAIRED_DATASET = "ZoDiPairedDataset"
MANIFEST_DATASET = "ZoDiManifestDataset"
ZODI_SEGMENTOR = "ZoDiSegmentor"

#: Transforms that change pixel values only (no geometry, label untouched): an independent
#: random draw for the source and the generated image.
PHOTOMETRIC = frozenset(
    {
        "PhotoMetricDistortion",
        "RGB2Gray",
        "AdjustGamma",
        "CLAHE",
        "RandomGrayscale",
        "Normalize",
        "BioMedicalGaussianNoise",
        "BioMedicalGaussianBlur",
        "BioMedicalRandomGamma",
    }
)
PACKERS = frozenset({"PackSegInputs", "PackZoDiPairInputs"})
PAIR_KEYS = ("img", "gen_img")
#: Transforms that mix several dataset items: no pair can go through them.
REFUSED = {
    "RandomMosaic": "it mixes four dataset items (MultiImageMixDataset); remove it from the "
    "train pipeline for ZoDi",
}


def _type(t: Any) -> str:
    return t.get("type") if isinstance(t, dict) else type(t).__name__


def _one_loader(pipeline: list, loader: str, where: str) -> list[dict]:
    """A copy of ``pipeline`` whose loading transforms become one ``loader``, at the first's place
    (manifests hold URIs of any storage). mmcv's and mmseg's file readers are all named Load*."""
    loads = [_type(t).startswith("Load") for t in pipeline]
    if not any(loads):
        raise ConfigError(f"{where}: expected a loading transform (LoadImageFromFile), found none")
    first = loads.index(True)
    return [
        dict(type=loader) if i == first else copy.deepcopy(dict(t))
        for i, t in enumerate(pipeline)
        if i == first or not loads[i]
    ]


def _pair_kind(t: dict) -> str:
    if t["type"] in {*PACKERS, "LoadZoDiPair", "ZoDiColorJitter", "ZoDiPairedTransforms"}:
        return "pair-aware"
    return "photometric" if t["type"] in PHOTOMETRIC else "geometric"


def _for_pairs(t: dict) -> dict:
    if t["type"] in PACKERS:  # same arguments (meta_keys)
        return dict(t, type="PackZoDiPairInputs")
    if t["type"] == "ZoDiColorJitter":  # already jitters each key independently
        return dict(t, keys=PAIR_KEYS)
    return t


def derive_paired_pipeline(pipeline: list, where: str = "train_pipeline") -> list[dict]:
    """The paired version of a single-image train pipeline (see the module doc, step 2).

    Consecutive geometric transforms form one ``ZoDiPairedTransforms`` group; consecutive
    photometric ones one ``ZoDiEachImage`` group, so the order of the original is kept.
    """
    for i, kind in enumerate(_type(t) for t in pipeline):
        if kind in REFUSED:
            raise ConfigError(f"{where}.{i}: {kind} cannot be applied to pairs: {REFUSED[kind]}")
    if not PACKERS.intersection(_type(t) for t in pipeline):
        raise ConfigError(f"{where}: expected PackSegInputs at the end, found none")
    out: list[dict] = []
    for kind, group in groupby(_one_loader(pipeline, "LoadZoDiPair", where), key=_pair_kind):
        if kind == "geometric":
            out.append(dict(type="ZoDiPairedTransforms", transforms=list(group)))
        elif kind == "photometric":
            out.append(dict(type="ZoDiEachImage", transforms=list(group)))
        else:
            out += [_for_pairs(t) for t in group]
    return out


def _inner_dataset(dataset: dict, where: str) -> dict:
    """The dataset that holds the pipeline, through Repeat/ClassBalanced wrappers."""
    while dataset.get("type") in ("RepeatDataset", "ClassBalancedDataset"):
        dataset = dataset["dataset"]
        where += ".dataset"
    if dataset.get("type") in ("ConcatDataset", "MultiImageMixDataset"):
        raise ConfigError(
            f"{where}.type: {dataset['type']} is not supported; ZoDi trains on one paired "
            f"manifest (give a config with a single training dataset)"
        )
    if "pipeline" not in dataset:
        raise ConfigError(f"{where}: expected a dataset with a pipeline, received {dataset!r}")
    return dataset


def _check_num_classes(model: dict) -> None:
    for key in ("decode_head", "auxiliary_head"):
        heads = model.get(key)
        for head in heads if isinstance(heads, list) else [heads]:
            if (n := (head or {}).get("num_classes")) not in (None, NUM_CLASSES):
                raise ConfigError(
                    f"model.{key}.num_classes: expected {NUM_CLASSES} (the Cityscapes train ids of "
                    f"our manifests), received {n}; use a Cityscapes config or --cfg-options "
                    f"model.{key}.num_classes={NUM_CLASSES}"
                )


def adapt_config(cfg, train_config: TrainConfig | None = None, *, source_only: bool = False):
    """Make ``cfg`` (an mmengine Config, changed in place and returned) train ZoDi, or the
    source-only baseline, on manifests."""
    tc = train_config or TrainConfig()
    cfg.custom_imports = dict(imports=["zodi_core.seg"], allow_failed_imports=False)
    cfg.setdefault("default_scope", "mmseg")
    wrapped = cfg.model.get("type") == ZODI_SEGMENTOR
    _check_num_classes(cfg.model.segmentor if wrapped else cfg.model)
    loader = cfg.train_dataloader
    inner = _inner_dataset(loader.dataset, "train_dataloader.dataset")
    where = "train_dataloader.dataset.pipeline"
    if source_only:
        if wrapped or inner.get("type") == PAIRED_DATASET:
            raise ConfigError(
                "--source-only: the config is itself a ZoDi config (ZoDiSegmentor / "
                "ZoDiPairedDataset); give the plain segmentation config"
            )
        pipeline = _one_loader(inner.pipeline, "LoadZoDiSample", where)
        loader.dataset = dict(type=MANIFEST_DATASET, manifest="", pipeline=pipeline)
    else:
        if inner.get("type") != PAIRED_DATASET:
            pipeline = derive_paired_pipeline(inner.pipeline, where)
            loader.dataset = dict(type=PAIRED_DATASET, manifest="", pipeline=pipeline)
        if not wrapped:
            cfg.model = dict(type=ZODI_SEGMENTOR, segmentor=cfg.model)
        cfg.model.update(scheme=tc.scheme, lambda_sim=tc.lambda_sim, feature_stage=tc.feature_stage)
    for name in ("val_dataloader", "test_dataloader"):
        if (dl := cfg.get(name)) is None or dl.get("dataset") is None:
            continue
        ds = _inner_dataset(dl.dataset, f"{name}.dataset")
        if ds.get("type") != MANIFEST_DATASET:
            pipeline = _one_loader(ds.pipeline, "LoadZoDiSample", f"{name}.dataset.pipeline")
            dl.dataset = dict(type=MANIFEST_DATASET, manifest="", pipeline=pipeline)
    return cfg


def replace_sync_batchnorm(node: Any) -> Any:
    """``SyncBN`` → ``BN`` in every ``norm_cfg`` of a config tree (DDP on CPU: torch's
    SyncBatchNorm synchronises on GPUs only)."""
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            replace_sync_batchnorm(value)
    elif isinstance(node, list | tuple):
        for value in node:
            replace_sync_batchnorm(value)
    return node
