"""Where every artifact lives: the one place that decides paths and storage keys.

An artifact root (a local folder or ``s3://bucket/prefix``) holds::

    manifests/<manifest_name>.parquet                   samples manifests (ingestion)
    images/<domain>/<generation digest>/<sample_id>.png generated images, content-addressed
    transfer/<domain>/shards/<shard>-<shard digest>-<generation digest>.parquet
                                                        one transfer manifest per shard
    paired/domain=<domain>/paired.parquet               paired manifest of a domain (merged shards)
    proxy/...                                           the same layout, for the source val split
    train/<model>/seed<n>/                              mmengine work dir of one training run
    eval/<slug>/                                        evaluation reports of one model
    grids/<domain>.png                                  sample grids
    report.json, report.md                              the pipeline report

Generated images are keyed by their *generation digest* (transfer settings + model fingerprint,
see :func:`zodi_core.transfer.lineage.generation_digest`): two settings never write the same
object, and the same settings always find their images. ``zodi transfer`` and the flows write
the same layout.
"""

from __future__ import annotations

from zodi_core import storage

IMAGES = "images"
SHARDS = "transfer"
PAIRED = "paired"
PROXY = "proxy"
MANIFESTS = "manifests"
TRAIN = "train"
EVAL = "eval"
GRIDS = "grids"


def generated_image_key(domain: str, generation_digest: str, sample_id: str) -> str:
    """Key (relative to the root) of a generated image."""
    return f"{IMAGES}/{domain}/{generation_digest}/{sample_id}.png"


def generated_images_prefix(domain: str, generation_digest: str | None = None) -> str:
    """Key prefix of a domain's generated images (of one generation digest, when given)."""
    return f"{IMAGES}/{domain}/" + (f"{generation_digest}/" if generation_digest else "")


def shard_manifest_key(
    domain: str, shard_name: str, shard_digest: str, generation_digest: str
) -> str:
    """Key of one shard's transfer manifest: named by shard content and generation digest."""
    name = f"{shard_name}-{shard_digest}-{generation_digest}.parquet"
    return f"{SHARDS}/{domain}/shards/{name}"


def paired_manifest_key(domain: str) -> str:
    """Key of a domain's paired manifest (partitioned by domain, hive-style)."""
    return f"{PAIRED}/domain={domain}/paired.parquet"


def uri(root: str, key: str) -> str:
    """Full URI of ``key`` under ``root``."""
    return storage.join_uri(root, key)


def paired_manifest_uri(root: str, domain: str) -> str:
    return uri(root, paired_manifest_key(domain))


def samples_manifest_uri(root: str, manifest_name: str) -> str:
    """URI of the samples manifest that ingestion writes for one dataset."""
    return uri(root, f"{MANIFESTS}/{manifest_name}.parquet")


def proxy_root(root: str) -> str:
    """Root of the proxy outputs (the source val split transferred to each domain)."""
    return uri(root, PROXY)


def train_work_dir(root: str, model: str, seed: int) -> str:
    return uri(root, f"{TRAIN}/{model}/seed{seed}")


def eval_dir(root: str, slug: str) -> str:
    return uri(root, f"{EVAL}/{slug}")


def sample_grid_uri(root: str, domain: str) -> str:
    return uri(root, f"{GRIDS}/{domain}.png")


REPORT_JSON = "report.json"
REPORT_MD = "report.md"
