"""Where every artifact lives: the one place that decides paths and storage keys.

Generated images are keyed by their *generation digest* (settings + model fingerprint,
:func:`zodi_core.transfer.lineage.generation_digest`): two settings never write the same object,
and the same settings always find their images. ``zodi transfer`` and the flows share this layout.
"""

from __future__ import annotations

import hashlib
import re

from zodi_core import storage

IMAGES = "images"
SHARDS = "transfer"
PAIRED = "paired"
GRIDS = "grids"
QUALITY = "quality"


def generated_image_key(domain: str, generation_digest: str, sample_id: str) -> str:
    """Key (relative to the root) of a generated image."""
    return f"{IMAGES}/{domain}/{generation_digest}/{sample_id}.png"


def shard_manifest_key(
    domain: str, shard_name: str, shard_digest: str, generation_digest: str
) -> str:
    """Key of one shard's transfer manifest: named by shard content and generation digest."""
    name = f"{shard_name}-{shard_digest}-{generation_digest}.parquet"
    return shard_manifests_prefix(domain) + name


def shard_manifests_prefix(domain: str) -> str:
    """Key prefix of a domain's shard manifests."""
    return f"{SHARDS}/{domain}/shards/"


def shard_generation(key: str) -> str:
    """The generation digest in a shard manifest's key (:func:`shard_manifest_key`)."""
    return key.rpartition("/")[2].removesuffix(".parquet").rpartition("-")[2]


def paired_manifest_key(domain: str, name: str = "paired") -> str:
    """Key of a domain's paired manifest (partitioned by domain, hive-style); ``name`` "scored":
    every row with quality scores and filter flags, "train": the rows the quality filter keeps."""
    return f"{PAIRED}/domain={domain}/{name}.parquet"


def scores_key(domain: str, score_digest: str) -> str:
    """Key of one scorer's scores of one paired manifest (content-addressed)."""
    return f"{QUALITY}/{domain}/scores-{score_digest}.parquet"


def predictions_key(domain: str, score_digest: str) -> str:
    """Key prefix of the layout scorer's predictions (``<sample_id>.png``, train ids)."""
    return f"{QUALITY}/{domain}/pred-{score_digest}"


def tune_key(domain: str, name: str) -> str:
    """Key of a ``zodi tune-strength`` output (per-strength manifests, the plot, the table)."""
    return f"{QUALITY}/tune/{domain}/{name}"


def quality_grid_uri(root: str, domain: str) -> str:
    """The worst generations of a domain (source | condition | generated | prediction)."""
    return uri(root, f"{GRIDS}/{domain}-worst.png")


def quality_histograms_uri(root: str) -> str:
    return uri(root, f"{GRIDS}/quality-histograms.png")


def uri(root: str, key: str) -> str:
    """Full URI of ``key`` under ``root``."""
    return storage.join_uri(root, key)


def paired_manifest_uri(root: str, domain: str) -> str:
    return uri(root, paired_manifest_key(domain))


def samples_manifest_uri(root: str, manifest_name: str) -> str:
    """URI of the samples manifest that ingestion writes for one dataset."""
    return uri(root, f"manifests/{manifest_name}.parquet")


def proxy_root(root: str) -> str:
    """Root of the proxy outputs (the source val split transferred to each domain)."""
    return uri(root, "proxy")


def train_work_dir(root: str, model: str, seed: int, settings: str | None = None) -> str:
    """Work dir of one training run; ``settings`` (a digest of what decides the model) gives
    each budget, schedule or data its own folder, so a run never resumes another's checkpoints."""
    return uri(root, f"train/{model}/seed{seed}" + (f"/{settings}" if settings else ""))


def eval_dir(root: str, slug: str) -> str:
    return uri(root, f"eval/{slug}")


def sample_grid_uri(root: str, domain: str) -> str:
    return uri(root, f"{GRIDS}/{domain}.png")


def artifact_key(kind: str, root: str) -> str:
    """Prefect artifact key of one experiment (artifact root): ``zodi-<kind>-<root slug>``.

    Per root, so two experiments never overwrite each other's report in the UI; Prefect keys
    allow lowercase letters, digits and dashes only.
    """
    kind = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")  # a domain may hold "_"
    tail = re.sub(r"[^a-z0-9]+", "-", str(root).lower()).strip("-")[-40:].strip("-")
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return f"zodi-{kind}-{tail}-{digest}" if tail else f"zodi-{kind}-{digest}"


REPORT_JSON = "report.json"
REPORT_MD = "report.md"
