"""Integrity of generated images: does storage hold the bytes their manifest rows recorded?

Three checks, from free to thorough: size from a folder listing (:func:`damaged_images`), PNG
structure where the bytes are read anyway (:func:`png_is_intact`), SHA-256 (:func:`verify_root`).
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from zodi_core import manifest, storage


def png_is_intact(data: bytes) -> bool:
    """Whether ``data`` is a whole PNG: PIL's ``verify()`` checks every chunk's CRC up to ``IEND``
    without decoding pixels (catches a killed write, a full disk, flipped bits)."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.verify()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        return False
    return True


def image_rows(table: pa.Table) -> pa.Table:
    """The rows of a transfer manifest that name a stored image (status ok or skipped)."""
    return table.filter(pc.is_in(table.column("status"), pa.array(["ok", "skipped"])))


def recorded_images(table: pa.Table) -> list[dict[str, Any]]:
    """``generated_uri``, ``image_bytes`` and ``image_sha256`` of each stored image a transfer
    manifest (as ``read_manifest`` returns it) names."""
    return image_rows(table).select(["generated_uri", "image_bytes", "image_sha256"]).to_pylist()


def damaged_images(
    images: Iterable[dict[str, Any]], listings: dict[str, dict[str, int]] | None = None
) -> dict[str, str]:
    """``{uri: reason}`` of the images that are missing or whose size is not the recorded one.

    One listing per folder, never a request per image (``listings`` caches them across calls). A
    row without a recorded size (an older manifest) is checked for presence only.
    """
    listings = {} if listings is None else listings
    out = {}
    for image in images:
        uri, recorded = image["generated_uri"], image["image_bytes"]
        folder, name = storage.split_uri(uri)
        if folder not in listings:
            listed = storage.open_storage(folder).sizes()
            listings[folder] = {k.rpartition("/")[2]: v for k, v in listed.items()}
        size = listings[folder].get(name)
        if size is None:
            out[uri] = "missing"
        elif recorded is not None and size != recorded:
            out[uri] = f"{size} bytes, the manifest recorded {recorded}"
    return out


@dataclass
class VerifyReport:
    """What :func:`verify_root` found: counts, and ``{uri: reason}`` of every damaged image."""

    manifests: list[str] = field(default_factory=list)
    images: int = 0
    hashed: int = 0
    damaged: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "manifests": len(self.manifests)}


def transfer_manifests(root: str) -> list[str]:
    """URIs of the Parquet files under ``root`` whose recorded schema is ``transfer`` (any stage)."""
    store = storage.open_storage(root)
    found = []
    for uri in (store.uri(k) for k in store.list() if k.endswith(".parquet")):
        try:
            manifest.read_manifest(uri, "transfer")
        except manifest.ManifestError:  # another schema, or not a manifest
            continue
        found.append(uri)
    return found


def _check_bytes(image: dict[str, Any]) -> str | None:
    """Why the stored bytes of ``image`` are not what was recorded (None: intact)."""
    try:
        data = storage.read_bytes(image["generated_uri"])
    except FileNotFoundError:
        return "missing"
    if (want := image["image_sha256"]) is not None:
        got = hashlib.sha256(data).hexdigest()
        return None if got == want else f"SHA-256 {got[:12]}…, the manifest recorded {want[:12]}…"
    return None if png_is_intact(data) else "not a whole PNG (truncated or corrupt)"


def verify_root(root: str, delete: bool = False, workers: int = 8) -> VerifyReport:
    """Check every image a transfer manifest under ``root`` names: size and SHA-256 (PNG structure
    when none is recorded); ``delete`` removes damaged ones so the next run regenerates them."""
    report = VerifyReport(manifests=transfer_manifests(root))
    images: dict[str, dict[str, Any]] = {}
    for uri in report.manifests:
        for image in recorded_images(manifest.read_manifest(uri, "transfer")):
            images.setdefault(image["generated_uri"], image)
    report.images = len(images)
    report.damaged = damaged_images(images.values())
    to_hash = [image for uri, image in sorted(images.items()) if uri not in report.damaged]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # S3 reads overlap; local ones are cheap
        reasons = list(pool.map(_check_bytes, to_hash))
    report.hashed = sum(image["image_sha256"] is not None for image in to_hash)
    report.damaged |= {i["generated_uri"]: r for i, r in zip(to_hash, reasons, strict=True) if r}
    if delete:
        report.deleted = [uri for uri, r in sorted(report.damaged.items()) if r != "missing"]
        for uri in report.deleted:
            storage.delete(uri)
    return report
