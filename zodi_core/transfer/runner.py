"""Manifest-level transfer: a samples manifest in, generated images and a transfer manifest out.

Images are content-addressed by their generation digest; their PNGs carry their lineage (no
wall-clock time: the same settings give the same bytes), so a rerun skips every intact image
already at its key, even one whose run died before its manifest.

The model never waits on file work: loader threads prepare batch i+1 and writer threads store
batch i−1 while the sampler runs batch i (``overlap=False``: in turn, the same bytes). An error in
a thread stops the transfer after every started write has finished and been counted.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, PngImagePlugin

from zodi_core import layout, manifest, storage
from zodi_core.conditions import resize_image, resize_nearest
from zodi_core.config import TransferConfig
from zodi_core.datasets.io import read_image, read_label
from zodi_core.device import resolve_device
from zodi_core.integrity import png_is_intact
from zodi_core.transfer.lineage import generation_digest
from zodi_core.transfer.models import Components, load_components
from zodi_core.transfer.sampler import TransferSampler, generation_size, validate_pair

#: PNG text keys of a generated image.
PNG_DIGEST_KEY = "zodi.config_digest"
PNG_METADATA_KEY = "zodi.metadata"
#: Lineage metadata copied to a manifest row as it is.
ROW_LINEAGE = "prompt negative_prompt strength seed k first_timestep palette method config_digest"
#: Metadata kept out of the PNG (it varies between identical runs); the manifest records it.
VOLATILE_METADATA = ("seconds",)
#: zlib level of generated PNGs (lossless at every level). Chosen by measurement on 512×1024
#: images (``bench/overlap.py --png-levels``, docs/benchmarks.md).
PNG_COMPRESS_LEVEL = 1
#: Loader threads (read, decode, check, resize: the next batch's images in parallel) and writer
#: threads (PNG encode, SHA-256, store). PIL's codecs and resize, and hashlib, release the GIL.
LOAD_WORKERS = min(4, os.cpu_count() or 1)
WRITE_WORKERS = min(4, os.cpu_count() or 1)
#: Batches of outputs waiting for the writers at most (bounds memory).
WRITE_AHEAD = 2


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
    #: Seconds of the generation loop: ``model`` (sampler calls), ``load_wait`` / ``write_wait``
    #: (the model's thread waiting for the loader / writers), ``wall`` (the whole loop).
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        counts = {k: getattr(self, k) for k in ("written", "skipped", "failed")}
        return {"manifest": self.manifest_uri, "config_digest": self.config_digest, **counts}


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
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def image_integrity(data: bytes) -> dict[str, Any]:
    """The manifest's integrity columns of stored image bytes: size and SHA-256 (hex)."""
    return {"image_bytes": len(data), "image_sha256": hashlib.sha256(data).hexdigest()}


def read_png_metadata(data: bytes) -> dict[str, Any] | None:
    """The metadata written by :func:`encode_png_with_metadata`, or None (no/foreign PNG)."""
    try:  # (the text chunks precede the image data: Image.open reads them into info)
        with Image.open(io.BytesIO(data)) as im:
            return json.loads(im.info[PNG_METADATA_KEY])  # (a JSONDecodeError is a ValueError)
    except (OSError, SyntaxError, ValueError, KeyError):
        return None


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
    overlap: bool = True,
    **storage_options: Any,
) -> TransferResult:
    """Transfer the samples of a manifest to ``config.domain`` and write a transfer manifest.

    ``config`` is resolved here, where the transfer enters; ``components`` (models or a loader;
    None: ``config.models``) are loaded only when an image is left to generate. A sample that
    cannot be read fails alone; any other error stops the transfer, :func:`partial_counts`
    telling what was written before it.
    """
    # the seed offset is recorded apart, so a recording's base seed can be recovered
    seed_offset = config.effective_seed - config.seed
    config = config.resolved()
    if not isinstance(samples, pa.Table):
        samples = manifest.read_manifest(str(samples), "samples", **storage_options)
    rows_in = samples.to_pylist()
    if sample_ids is not None:
        wanted = list(dict.fromkeys(sample_ids))
        by_id = {r["sample_id"]: r for r in rows_in}
        if missing := [s for s in wanted if s not in by_id]:
            raise ValueError(
                f"sample_ids: {len(missing)} not in the samples manifest: {missing[:5]}"
            )
        rows_in = [by_id[s] for s in wanted]
    digest = generation_digest(config, models_fingerprint)
    manifest_uri = manifest_uri or layout.paired_manifest_uri(out_root, config.domain)
    result = TransferResult(rows=[], manifest_uri=manifest_uri, config_digest=digest)
    job = _Job(config, storage.open_storage(out_root, **storage_options), digest,
               storage_options, result)  # fmt: skip
    try:
        _transfer_rows(job, rows_in, components, progress, overlap)
        result.rows = [job.rows[r["sample_id"]] for r in rows_in]
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
        # The original exception propagates unchanged (its type decides retries); the counts of
        # what was written before it (also when only the manifest write failed) travel with it.
        err.partial_counts = result.summary()  # type: ignore[attr-defined]
        raise
    return result


@dataclass
class _Job:
    """One transfer's resolved settings, storage and tallies: what the loop and its threads share
    (the settings are passed down once, here, not argument by argument)."""

    config: TransferConfig
    store: storage.Storage
    digest: str
    storage_options: dict[str, Any]
    result: TransferResult
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    bar: Any = None

    def key(self, sample_id: str) -> str:
        return layout.generated_image_key(self.config.domain, self.digest, sample_id)

    def record(
        self,
        sample: dict[str, Any],
        key: str,
        status: str,
        meta: dict[str, Any],
        integrity: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """One sample's manifest row (status ok, skipped or failed), counted."""
        sid = sample["sample_id"]
        self.rows[sid] = {
            "sample_id": sid,
            "domain": self.config.domain,
            "source_uri": sample["image_uri"],
            "label_uri": sample["label_uri"],
            "label_format": sample["label_format"],
            "generated_uri": None if status == "failed" else self.store.uri(key),
            **(integrity or {"image_bytes": None, "image_sha256": None}),
            **{c: meta[c] for c in ROW_LINEAGE.split()},
            "model_revisions": json.dumps(meta["model_revisions"], sort_keys=True),
            "status": status,
            "error": error,
            "seconds": meta.get("seconds", 0.0),  # only a generated image's metadata has them
        }
        counts = {"ok": "written", "skipped": "skipped", "failed": "failed"}[status]
        setattr(self.result, counts, getattr(self.result, counts) + 1)
        if error is not None:
            self.result.errors[sid] = error
        self.bar.update(1)


def _transfer_rows(
    job: _Job,
    rows_in: list[dict[str, Any]],
    components: Components | Callable[[], Components] | None,
    progress: bool,
    overlap: bool,
) -> None:
    """Skip what storage already holds, generate the rest; one manifest row per sample."""
    from tqdm.auto import tqdm

    config = job.config
    job.bar = tqdm(total=len(rows_in), unit="img", disable=not progress,
                   desc=f"transfer {config.domain}")  # fmt: skip
    pending: list[dict[str, Any]] = []
    # 1. what storage already holds with this digest is skipped (also after a killed run)
    for r in rows_in:
        key = job.key(r["sample_id"])
        if existing := _existing_image(job, key):
            job.record(r, key, "skipped", *existing)
        else:
            pending.append(r)
    if not pending:
        job.bar.close()
        return
    size = config.batch_size
    batches = [pending[i : i + size] for i in range(0, len(pending), size)]
    # overlap=False: one thread each, waited for at once (in turn: read, model, write)
    loader, writers = (
        ThreadPoolExecutor(n if overlap else 1, thread_name_prefix=name)
        for n, name in ((LOAD_WORKERS, "zodi-load"), (WRITE_WORKERS, "zodi-write"))
    )

    def run(pool: Executor, fn: Callable[..., Any], *items: Iterable[Any]) -> list[Future]:
        futures = [pool.submit(fn, job, *args) for args in zip(*items, strict=True)]
        if not overlap:
            wait(futures)
        return futures

    timings = dict.fromkeys(("model", "load_wait", "write_wait", "wall"), 0.0)
    in_flight: collections.deque[list[Future]] = collections.deque()  # batches of writes
    start = time.perf_counter()
    # 2. the first batch loads while the models load (only when something is left to generate)
    load = run(loader, _load_sample, batches[0])
    try:
        if components is None:
            device, dtype = resolve_device(config.device, config.dtype)
            components = load_components(config.models, device, dtype)
        elif not isinstance(components, Components):
            components = components()
        sampler = TransferSampler(components, config)
        # 3. batch i on the model, i+1 loading, i-1 writing; a sample that cannot be read (or
        # keyed) fails alone
        for i in range(len(batches)):
            for write in (w for batch in in_flight for w in batch):
                if write.done() and write.exception() is not None:
                    raise write.exception()  # a storage outage stops the model early
            t = time.perf_counter()
            # (an error propagates: the finally's shutdown cancels the loads not yet started)
            items = [future.result() for future in load]
            loaded = [x for x in items if isinstance(x, _Loaded)]
            failed = [x for x in items if not isinstance(x, _Loaded)]
            if i + 1 < len(batches):  # (overlap=False: the loads run here, and are timed)
                load = run(loader, _load_sample, batches[i + 1])
            timings["load_wait"] += time.perf_counter() - t
            for r, key, err in failed:
                meta = sampler.lineage(config, r["sample_id"], digest=job.digest)
                job.record(r, key, "failed", meta, error=err)
            if not loaded:
                continue
            t = time.perf_counter()
            ids = [x.row["sample_id"] for x in loaded]
            outputs = sampler([x.image for x in loaded], [x.label for x in loaded], ids)
            timings["model"] += time.perf_counter() - t
            t = time.perf_counter()
            _drain(job, in_flight, WRITE_AHEAD - 1, raise_=True)
            in_flight.append(run(writers, _write_image, loaded, outputs))
            timings["write_wait"] += time.perf_counter() - t
        t = time.perf_counter()
        _drain(job, in_flight, 0, raise_=True)
        timings["write_wait"] += time.perf_counter() - t
    finally:
        # What was started is finished and counted before the error propagates: a write in
        # flight completes (atomic: whole or absent) and its image is counted as written.
        loader.shutdown(wait=True, cancel_futures=True)
        _drain(job, in_flight, 0, raise_=False)
        writers.shutdown(wait=True)
        timings["wall"] = time.perf_counter() - start
        job.result.timings = timings
        job.bar.close()


@dataclass
class _Loaded:
    """One sample read, checked and resized for the sampler (loader thread)."""

    row: dict[str, Any]
    key: str
    #: (h, w, 3) uint8 at the generation size; (h, w) uint8 train ids, nearest-neighbour.
    image: np.ndarray
    label: np.ndarray
    #: (width, height) of the source image (``resize_to_source``).
    source_size: tuple[int, int]


def _load_sample(job: _Job, r: dict[str, Any]) -> _Loaded | tuple[dict[str, Any], str, str]:
    """Read, decode, check and resize one sample (loader thread); or (row, key, error) when it
    fails alone: unreadable, a bad pair, or an id that cannot be a storage key."""
    sid, options = r["sample_id"], job.storage_options
    key = job.key(sid)
    try:
        job.store.uri(key)  # refuses an id that cannot be a storage key
        image = read_image(r["image_uri"], **options)
        label = read_label(r["label_uri"], r["label_format"], **options)
        validate_pair(image, label, f"sample {sid!r}")
    except (ValueError, FileNotFoundError, storage.PermanentStorageError) as err:
        # (a transient storage error propagates: the shard task retries it)
        return r, key, str(err)
    except BaseException as err:
        _name_in(err, f"reading sample {sid!r}:", r["image_uri"], r["label_uri"])
        raise
    # The sampler's own resizes (bicubic image, nearest labels) done here, beside the model:
    # given images at their generation size it has nothing left to resize.
    height, width = image.shape[:2]
    size = generation_size(width, height, job.config.short_side, job.config.size_multiple)
    return _Loaded(r, key, resize_image(image, size), resize_nearest(label, size), (width, height))


def _write_image(job: _Job, sample: _Loaded, out: Any) -> tuple[Any, ...]:
    """Encode, hash and store one generated image (writer thread): its :meth:`_Job.record`
    arguments."""
    image = out.image
    meta = {**out.metadata, "config_digest": job.digest}
    if job.config.resize_to_source and (image.shape[1], image.shape[0]) != sample.source_size:
        image = resize_image(image, sample.source_size)
        meta["width"], meta["height"] = sample.source_size
    try:
        data = encode_png_with_metadata(image, meta)
        job.store.put_bytes(sample.key, data)
    except BaseException as err:
        _name_in(err, "writing", job.store.uri(sample.key))
        raise
    return sample.row, sample.key, "ok", meta, image_integrity(data)


def _drain(job: _Job, in_flight: collections.deque, keep: int, *, raise_: bool) -> None:
    """Wait for the oldest batches' writes until ``keep`` remain, counting each image stored; a
    batch's first error is raised if ``raise_`` (else dropped: another error propagates)."""
    while len(in_flight) > keep:
        batch = in_flight.popleft()
        for future in batch:
            if future.exception() is None:  # (waits for the write)
                job.record(*future.result())
        first = next((f.exception() for f in batch if f.exception()), None)
        if first is not None and raise_:
            raise first


def _name_in(err: BaseException, doing: str, *uris: str) -> None:
    """Make sure ``err`` names the file it is about: a note when its message names none of
    ``uris`` (a note, not a new exception: the type decides retries)."""
    if not any(u in str(err) for u in uris):
        err.add_note(f"while {doing} {', '.join(uris)}")


def _existing_image(job: _Job, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Metadata and integrity of an image already written with the same digest, else None."""
    try:
        job.store.uri(key)
    except storage.PermanentStorageError:  # an id that cannot be a key: fails alone in step 3
        return None
    if not job.store.exists(key):
        return None
    data = job.store.get_bytes(key)
    meta = read_png_metadata(data)
    # truncated or corrupt (its text chunks may still read): redo
    if meta is None or meta.get("config_digest") != job.digest or not png_is_intact(data):
        return None
    return meta, image_integrity(data)
