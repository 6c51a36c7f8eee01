"""Manifest-level transfer: a samples manifest in, generated images and a transfer manifest out.

Images are content-addressed: they go to ``<out_root>/images/<domain>/<generation digest>/
<sample_id>.png`` (:mod:`zodi_core.layout`), where the generation digest covers the transfer
settings and the models' fingerprint, so different settings never overwrite each other. The
PNG's text chunks carry the same digest and the image's lineage (no wall-clock time, so the same
settings give the same bytes; timings are kept in the manifest). A rerun (or a retried Prefect
shard) skips every image already present at its key with that digest, even when the run that
wrote it died before writing its manifest.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, PngImagePlugin

from zodi_core import layout, manifest, storage
from zodi_core.config import TransferConfig
from zodi_core.datasets.io import read_image, read_label
from zodi_core.transfer.lineage import generation_digest
from zodi_core.transfer.models import Components, load_components, resolve_device
from zodi_core.transfer.sampler import TransferSampler, plan_timesteps, sample_seed, validate_pair

#: PNG text keys of a generated image.
PNG_DIGEST_KEY = "zodi.config_digest"
PNG_METADATA_KEY = "zodi.metadata"
#: Metadata kept out of the PNG (it varies between identical runs); the manifest records it.
VOLATILE_METADATA = ("seconds",)


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


def default_manifest_uri(out_root: str, domain: str) -> str:
    """Where ``zodi transfer`` writes its manifest: the domain's paired manifest, as the flows do."""
    return layout.paired_manifest_uri(out_root, domain)


def _attach_partial(err: BaseException, result: TransferResult) -> None:
    # The original exception propagates unchanged (its type decides retries); the counts of
    # what was really written before it travel with it, for the run's summary.
    try:
        err.partial_counts = result.summary()  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__
        pass


def partial_counts(err: BaseException) -> dict[str, Any] | None:
    """Counts of a transfer interrupted by ``err`` (images written before it), or None."""
    return getattr(err, "partial_counts", None)


def encode_png_with_metadata(image: np.ndarray, metadata: dict[str, Any]) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image with the digest and metadata as text chunks."""
    info = PngImagePlugin.PngInfo()
    stable = {k: v for k, v in metadata.items() if k not in VOLATILE_METADATA}
    info.add_text(PNG_DIGEST_KEY, str(metadata["config_digest"]))
    info.add_text(PNG_METADATA_KEY, json.dumps(stable, sort_keys=True, default=str))
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
    components: Components | Callable[[], Components] | None = None,
    progress: bool = True,
    models_fingerprint: str | None = None,
    **storage_options: Any,
) -> TransferResult:
    """Transfer the samples of a manifest to ``config.domain`` and write a transfer manifest.

    Args:
        samples: a "samples" manifest table or its URI.
        config: transfer settings (domain, strength, models, batch size, ...).
        out_root: local folder or ``s3://`` prefix; images go to
            ``images/<domain>/<generation digest>/<id>.png`` (:mod:`zodi_core.layout`).
        sample_ids: only these samples (a Prefect shard); None: all rows.
        manifest_uri: where to write the transfer manifest; None: the domain's paired manifest
            under ``out_root``.
        components: already-loaded models, or a function that loads them; None: loaded from
            ``config.models``. Models are loaded only when an image is left to generate.
        progress: show a tqdm bar (images/s).
        models_fingerprint: the models' fingerprint, when the caller has it already.
    Returns:
        :class:`TransferResult` with one row per sample (status ok, skipped or failed). A sample
        that cannot be read or whose id cannot be a storage key fails alone.
    Raises:
        ValueError: a requested sample id is not in the manifest.
        Any other error (storage outage, out of memory after retries) stops the transfer; it
        propagates with :func:`partial_counts` telling what was written before it.
    """
    # The domain's own settings folded in (zodi_core.config); the seed offset is recorded apart,
    # so a recording's base seed can be recovered (zodi_core.regeneration).
    seed_offset = config.effective_seed - config.seed
    config = config.resolved()
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
    digest = generation_digest(config, models_fingerprint)
    manifest_uri = manifest_uri or default_manifest_uri(out_root, config.domain)
    store = storage.open_storage(out_root, **storage_options)
    result = TransferResult(rows=[], manifest_uri=manifest_uri, config_digest=digest)
    try:
        rows_out = _transfer_rows(
            rows_in, config, store, digest, components, result, progress, storage_options
        )
        result.rows = [rows_out[r["sample_id"]] for r in rows_in]
        manifest.write_manifest(
            result.rows,
            manifest_uri,
            "transfer",
            extra_metadata={
                "transfer_config": config.model_dump_json(),
                "seed_offset": str(seed_offset),
                "config_digest": digest,
                "domain": config.domain,
            },
            **storage_options,
        )
    except BaseException as err:
        _attach_partial(err, result)  # also when only the manifest write failed
        raise
    return result


def _transfer_rows(
    rows_in: list[dict[str, Any]],
    config: TransferConfig,
    store: storage.Storage,
    digest: str,
    components: Components | Callable[[], Components] | None,
    result: TransferResult,
    progress: bool,
    storage_options: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Skip what storage already holds, generate the rest; one manifest row per sample."""
    from tqdm.auto import tqdm

    domain = config.domain
    rows_out: dict[str, dict[str, Any]] = {}
    pending: list[dict[str, Any]] = []
    # 1. what storage already holds with this digest is skipped (also after a killed run)
    for r in rows_in:
        key = layout.generated_image_key(domain, digest, r["sample_id"])
        try:
            store.uri(key)
        except storage.PermanentStorageError:
            pending.append(r)  # an id that cannot be a key: fails alone in step 3
            continue
        meta = _existing_metadata(store, key, digest)
        if meta is None:
            pending.append(r)
            continue
        rows_out[r["sample_id"]] = _row(r, config, store, key, meta, status="skipped")
        result.skipped += 1

    bar = tqdm(total=len(rows_in), unit="img", disable=not progress, desc=f"transfer {domain}")
    bar.update(result.skipped)
    if not pending:
        bar.close()
        return rows_out
    # 2. the models, only when something is left to generate
    if components is None:
        device, dtype = resolve_device(config.device, config.dtype)
        components = load_components(config.models, device, dtype)
    elif not isinstance(components, Components):
        components = components()
    sampler = TransferSampler(components, config)
    plan = plan_timesteps(sampler.scheduler, config)
    base_meta = {
        "strength": config.effective_strength,
        "k": plan.k,
        "first_timestep": plan.first_timestep,
        "prompt": config.effective_prompt,
        "negative_prompt": config.negative_prompt,
        "palette": config.palette,
        "method": config.method,
        "model_revisions": dict(components.revisions),
        "config_digest": digest,
        "seconds": 0.0,
    }
    # 3. generate batch by batch; a sample that cannot be read (or keyed) fails alone
    for start in range(0, len(pending), config.batch_size):
        loaded = []
        for r in pending[start : start + config.batch_size]:
            sid = r["sample_id"]
            key = layout.generated_image_key(domain, digest, sid)
            try:
                store.uri(key)  # refuses an id that cannot be a storage key
                image = read_image(r["image_uri"], **storage_options)
                label = read_label(r["label_uri"], r["label_format"], **storage_options)
                validate_pair(image, label, f"sample {sid!r}")
            except (ValueError, FileNotFoundError, storage.PermanentStorageError) as err:
                # (a transient storage error propagates: the shard task retries it)
                seed = sample_seed(config.seed, sid, config.seed_policy)
                meta = {**base_meta, "seed": seed, "prompt": config.prompt_for(seed)}
                rows_out[sid] = _row(r, config, store, key, meta, status="failed", error=str(err))
                result.failed += 1
                result.errors[sid] = str(err)
                bar.update(1)
                continue
            loaded.append((r, key, image, label))
        if not loaded:
            continue
        outputs = sampler(
            [x[2] for x in loaded], [x[3] for x in loaded], [x[0]["sample_id"] for x in loaded]
        )
        for (r, key, _, _), out in zip(loaded, outputs, strict=True):
            # the sampler names the settings; the image and its row carry the generation digest
            meta = {**out.metadata, "config_digest": digest}
            store.put_bytes(key, encode_png_with_metadata(out.image, meta))
            rows_out[r["sample_id"]] = _row(r, config, store, key, meta, status="ok")
            result.written += 1
        bar.update(len(loaded))
    bar.close()
    return rows_out


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
    key: str,
    meta: dict[str, Any],
    *,
    status: str,
    error: str | None = None,
) -> dict[str, Any]:
    generated = None if status == "failed" else store.uri(key)
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
