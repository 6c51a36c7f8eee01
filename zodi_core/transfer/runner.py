"""Manifest-level transfer: a samples manifest in, generated images and a transfer manifest out.

Images go to ``<out_root>/images/<domain>/<sample_id>.png`` through the storage layer, with the
image's metadata (config digest included) in the PNG's text chunks. That makes a written image
self-describing: a rerun (or a retried Prefect shard) skips every image whose PNG already carries
the same digest, even when the run that wrote it died before writing its manifest.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, PngImagePlugin

from zodi_core import manifest, storage
from zodi_core.config import TransferConfig
from zodi_core.datasets.io import read_image, read_label
from zodi_core.transfer.models import Components, load_components, resolve_device
from zodi_core.transfer.sampler import (
    TransferSampler,
    plan_timesteps,
    sample_seed,
    transfer_digest,
    validate_pair,
)

#: PNG text keys of a generated image.
PNG_DIGEST_KEY = "zodi.config_digest"
PNG_METADATA_KEY = "zodi.metadata"


@dataclass
class TransferResult:
    """What :func:`transfer_manifest` did."""

    rows: list[dict[str, Any]]
    manifest_uri: str
    config_digest: str
    written: int = 0
    skipped: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest_uri,
            "config_digest": self.config_digest,
            "written": self.written,
            "skipped": self.skipped,
            "failed": self.failed,
        }


def image_key(domain: str, sample_id: str) -> str:
    """Storage key of a generated image, relative to the output root."""
    return f"images/{domain}/{sample_id}.png"


def default_manifest_uri(out_root: str, domain: str) -> str:
    return storage.join_uri(out_root, f"transfer-{domain}.parquet")


def encode_png_with_metadata(image: np.ndarray, metadata: dict[str, Any]) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image with the digest and metadata as text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_DIGEST_KEY, str(metadata["config_digest"]))
    info.add_text(PNG_METADATA_KEY, json.dumps(metadata, sort_keys=True, default=str))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_png_metadata(data: bytes) -> dict[str, Any] | None:
    """The metadata written by :func:`encode_png_with_metadata`, or None (no/foreign PNG)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            text = dict(getattr(im, "text", {}) or {})
    except (OSError, SyntaxError, ValueError):
        return None
    if PNG_METADATA_KEY not in text:
        return None
    try:
        meta = json.loads(text[PNG_METADATA_KEY])
    except json.JSONDecodeError:
        return None
    meta["config_digest"] = text.get(PNG_DIGEST_KEY, meta.get("config_digest"))
    return meta


def _samples_table(samples: pa.Table | str, **storage_options: Any) -> pa.Table:
    if isinstance(samples, pa.Table):
        return samples
    return manifest.read_manifest(str(samples), "samples", **storage_options)


def transfer_manifest(
    samples: pa.Table | str,
    config: TransferConfig,
    out_root: str,
    *,
    sample_ids: Iterable[str] | None = None,
    manifest_uri: str | None = None,
    components: Components | None = None,
    progress: bool = True,
    **storage_options: Any,
) -> TransferResult:
    """Transfer the samples of a manifest to ``config.domain`` and write a transfer manifest.

    Args:
        samples: a "samples" manifest table or its URI.
        config: transfer settings (domain, strength, models, batch size, ...).
        out_root: local folder or ``s3://`` prefix; images go to ``images/<domain>/<id>.png``.
        sample_ids: only these samples (a Prefect shard); None: all rows.
        manifest_uri: where to write the transfer manifest; None: ``<out_root>/transfer-<domain>.parquet``.
        components: already-loaded models; None: loaded from ``config.models`` when needed.
        progress: show a tqdm bar (images/s).
    Returns:
        :class:`TransferResult` with one row per sample (status ok, skipped or failed).
    Raises:
        ValueError: a requested sample id is not in the manifest.
    """
    from tqdm.auto import tqdm

    table = _samples_table(samples, **storage_options)
    rows_in = table.to_pylist()
    if sample_ids is not None:
        wanted = list(dict.fromkeys(sample_ids))
        by_id = {r["sample_id"]: r for r in rows_in}
        missing = [s for s in wanted if s not in by_id]
        if missing:
            raise ValueError(
                f"sample_ids: {len(missing)} not in the samples manifest: {missing[:5]}"
            )
        rows_in = [by_id[s] for s in wanted]
    domain = config.domain
    digest = transfer_digest(config)
    manifest_uri = manifest_uri or default_manifest_uri(out_root, domain)
    store = storage.open_storage(out_root, **storage_options)

    result = TransferResult(rows=[], manifest_uri=manifest_uri, config_digest=digest)
    rows_out: dict[str, dict[str, Any]] = {}
    pending: list[dict[str, Any]] = []
    for r in rows_in:
        meta = _existing_metadata(store, image_key(domain, r["sample_id"]), digest)
        if meta is None:
            pending.append(r)
            continue
        rows_out[r["sample_id"]] = _row(r, config, store, meta, status="skipped")
        result.skipped += 1

    bar = tqdm(total=len(rows_in), unit="img", disable=not progress, desc=f"transfer {domain}")
    bar.update(result.skipped)
    if pending:
        if components is None:
            device, dtype = resolve_device(config.device, config.dtype)
            components = load_components(config.models, device, dtype)
        sampler = TransferSampler(components, config)
        revisions = dict(components.revisions)
        plan = plan_timesteps(sampler.scheduler, config)
        base_meta = {
            "strength": config.effective_strength,
            "k": plan.k,
            "first_timestep": plan.first_timestep,
            "prompt": config.effective_prompt,
            "negative_prompt": config.negative_prompt,
            "palette": config.palette,
            "method": config.method,
            "model_revisions": revisions,
            "config_digest": digest,
            "seconds": 0.0,
        }
        for start in range(0, len(pending), config.batch_size):
            chunk = pending[start : start + config.batch_size]
            loaded = []
            for r in chunk:
                sid = r["sample_id"]
                try:
                    image = read_image(r["image_uri"], **storage_options)
                    label = read_label(r["label_uri"], r["label_format"], **storage_options)
                    validate_pair(image, label, f"sample {sid!r}")
                except (ValueError, FileNotFoundError, storage.StorageError) as err:
                    meta = {**base_meta, "seed": sample_seed(config.seed, sid, config.seed_policy)}
                    rows_out[sid] = _row(r, config, store, meta, status="failed", error=str(err))
                    result.failed += 1
                    result.errors[sid] = str(err)
                    bar.update(1)
                    continue
                loaded.append((r, image, label))
            if not loaded:
                continue
            outputs = sampler(
                [x[1] for x in loaded], [x[2] for x in loaded], [x[0]["sample_id"] for x in loaded]
            )
            for (r, _, _), out in zip(loaded, outputs, strict=True):
                key = image_key(domain, r["sample_id"])
                store.put_bytes(key, encode_png_with_metadata(out.image, out.metadata))
                rows_out[r["sample_id"]] = _row(r, config, store, out.metadata, status="ok")
                result.written += 1
            bar.update(len(loaded))
    bar.close()

    result.rows = [rows_out[r["sample_id"]] for r in rows_in]
    manifest.write_manifest(
        result.rows,
        manifest_uri,
        "transfer",
        extra_metadata={
            "transfer_config": config.model_dump_json(),
            "config_digest": digest,
            "domain": domain,
        },
        **storage_options,
    )
    return result


def _existing_metadata(store: storage.Storage, key: str, digest: str) -> dict[str, Any] | None:
    """Metadata of an image already written with the same digest, else None."""
    if not store.exists(key):
        return None
    meta = read_png_metadata(store.get_bytes(key))
    if meta is None or meta.get("config_digest") != digest:
        return None
    return meta


def _row(
    sample: dict[str, Any],
    config: TransferConfig,
    store: storage.Storage,
    meta: dict[str, Any],
    *,
    status: str,
    error: str | None = None,
) -> dict[str, Any]:
    generated = (
        None if status == "failed" else store.uri(image_key(config.domain, sample["sample_id"]))
    )
    return {
        "sample_id": sample["sample_id"],
        "domain": config.domain,
        "source_uri": sample["image_uri"],
        "label_uri": sample["label_uri"],
        "label_format": sample["label_format"],
        "generated_uri": generated,
        "prompt": meta["prompt"],
        "negative_prompt": meta["negative_prompt"],
        "strength": float(meta["strength"]),
        "seed": int(meta["seed"]),
        "k": int(meta["k"]),
        "first_timestep": int(meta["first_timestep"]),
        "palette": meta["palette"],
        "method": meta["method"],
        "model_revisions": json.dumps(meta["model_revisions"], sort_keys=True),
        "config_digest": meta["config_digest"],
        "status": status,
        "error": error,
        "seconds": float(meta.get("seconds", 0.0)) if status == "ok" else 0.0,
    }
