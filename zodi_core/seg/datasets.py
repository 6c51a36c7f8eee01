"""Manifest-backed MMSeg datasets: training and evaluation read manifests, never folders.

- :class:`ZoDiPairedDataset` — one item per (source image, generated image, label) triple of a
  transfer manifest (rows with status ``ok``/``skipped`` and a ``generated_uri``). With
  ``source_manifest`` the source image and label come from a samples manifest, joined on
  ``sample_id`` (never on row order; the authors' release paired files by listing order).
- :class:`ZoDiManifestDataset` — one item per row of a samples manifest (``image_uri``), or of a
  transfer manifest (``image_column='source_uri'`` for source-only training from the paired
  manifest, ``'generated_uri'`` for proxy evaluation on generated images).

Both carry the 19 Cityscapes classes and palette of ``CityscapesDataset.METAINFO``.
"""

from __future__ import annotations

import copy
from typing import Any

from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

from zodi_core import storage
from zodi_core.datasets.io import LABEL_FORMATS
from zodi_core.manifest import ManifestError, read_manifest

#: Transfer rows usable for training: generated ("ok") or reused from a previous run ("skipped").
USABLE_STATUSES = ("ok", "skipped")


def _schema_of(table) -> str:
    meta = table.schema.metadata or {}
    return meta.get(b"zodi.schema", b"").decode()


def _check_unique(ids: list[str], uri: str) -> None:
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            raise ManifestError(f"{uri}: sample_id {sid!r} appears more than once")
        seen.add(sid)


def _check_label_format(fmt: str, sid: str, uri: str) -> None:
    if fmt not in LABEL_FORMATS:
        raise ManifestError(
            f"{uri}: sample {sid!r}: label_format expected one of {LABEL_FORMATS}, received {fmt!r}"
        )


def read_pairs(
    manifest: str,
    source_manifest: str | None = None,
    check_exists: bool = True,
) -> list[dict[str, Any]]:
    """The training pairs of a transfer manifest, sorted by ``sample_id``.

    Args:
        manifest: URI of a ``transfer`` manifest.
        source_manifest: optional URI of a ``samples`` manifest; when given, each pair's source
            image and label are that manifest's row with the same ``sample_id``.
        check_exists: check up front that every generated image exists (a missing one is named).
    Returns:
        dicts with ``sample_id``, ``img_path``, ``gen_path``, ``seg_map_path``, ``label_format``,
        ``domain``.
    Raises:
        ManifestError: empty manifest, no usable row, duplicate ids, a sample missing from the
            source manifest. FileNotFoundError: a generated image is missing.
    """
    table = read_manifest(manifest, "transfer")
    if table.num_rows == 0:
        raise ManifestError(f"{manifest}: the paired manifest is empty (0 rows)")
    rows = [
        r for r in table.to_pylist() if r["status"] in USABLE_STATUSES and r.get("generated_uri")
    ]
    if not rows:
        raise ManifestError(
            f"{manifest}: no usable pair among {table.num_rows} rows (expected status in "
            f"{USABLE_STATUSES} with a generated_uri)"
        )
    _check_unique([r["sample_id"] for r in rows], manifest)
    sources: dict[str, dict[str, Any]] | None = None
    if source_manifest is not None:
        src_rows = read_manifest(source_manifest, "samples").to_pylist()
        _check_unique([r["sample_id"] for r in src_rows], source_manifest)
        sources = {r["sample_id"]: r for r in src_rows}
    pairs = []
    for r in sorted(rows, key=lambda r: r["sample_id"]):
        sid = r["sample_id"]
        if sources is not None:
            if sid not in sources:
                raise ManifestError(
                    f"{manifest}: sample {sid!r} has no row in the source manifest {source_manifest}"
                )
            src = sources[sid]
            img, label, fmt = src["image_uri"], src["label_uri"], src["label_format"]
        else:
            img, label, fmt = r["source_uri"], r["label_uri"], r["label_format"]
        _check_label_format(fmt, sid, manifest)
        if check_exists and not storage.exists(r["generated_uri"]):
            raise FileNotFoundError(
                f"{manifest}: sample {sid!r}: generated image {r['generated_uri']} not found"
            )
        pairs.append(
            {
                "sample_id": sid,
                "img_path": img,
                "gen_path": r["generated_uri"],
                "seg_map_path": label,
                "label_format": fmt,
                "domain": r["domain"],
            }
        )
    return pairs


def read_samples(manifest: str, image_column: str | None = None) -> list[dict[str, Any]]:
    """One item per row of a samples or transfer manifest, sorted by ``sample_id``.

    ``image_column`` picks the image: default ``image_uri`` (samples) / ``source_uri``
    (transfer); ``generated_uri`` for the proxy set (rows without one are skipped).
    """
    table = read_manifest(manifest)
    schema = _schema_of(table)
    if schema not in ("samples", "transfer"):
        raise ManifestError(
            f"{manifest}: expected a 'samples' or 'transfer' manifest, found {schema or 'none'!r}"
        )
    column = image_column or ("image_uri" if schema == "samples" else "source_uri")
    if column not in table.column_names:
        raise ManifestError(
            f"{manifest}: image_column expected one of {table.column_names}, received {column!r}"
        )
    if table.num_rows == 0:
        raise ManifestError(f"{manifest}: the manifest is empty (0 rows)")
    rows = table.to_pylist()
    if schema == "transfer" and column == "generated_uri":
        rows = [r for r in rows if r["status"] in USABLE_STATUSES and r.get("generated_uri")]
        if not rows:
            raise ManifestError(f"{manifest}: no row has a usable generated image")
    _check_unique([r["sample_id"] for r in rows], manifest)
    items = []
    for r in sorted(rows, key=lambda r: r["sample_id"]):
        _check_label_format(r["label_format"], r["sample_id"], manifest)
        items.append(
            {
                "sample_id": r["sample_id"],
                "img_path": r[column],
                "seg_map_path": r["label_uri"],
                "label_format": r["label_format"],
                "domain": r["domain"],
            }
        )
    return items


class _ManifestDatasetBase(BaseSegDataset):
    METAINFO = copy.deepcopy(CityscapesDataset.METAINFO)

    def __init__(self, manifest: str = "", **kwargs: Any) -> None:
        if "ann_file" in kwargs:
            raise TypeError(
                f"{type(self).__name__}: pass the manifest URI as manifest=, not ann_file="
            )
        self.manifest = manifest
        super().__init__(ann_file=manifest, **kwargs)

    def _require_manifest(self) -> None:
        if not self.manifest:
            raise ValueError(
                f"{type(self).__name__}.manifest: expected a manifest URI, received an empty "
                f"string (zodi train sets it from --paired-manifest / --source-manifest)"
            )


@DATASETS.register_module()
class ZoDiPairedDataset(_ManifestDatasetBase):
    """Source/generated pairs of a transfer manifest (see :func:`read_pairs`)."""

    def __init__(
        self,
        manifest: str = "",
        source_manifest: str | None = None,
        check_exists: bool = True,
        **kwargs: Any,
    ) -> None:
        self.source_manifest = source_manifest
        self.check_exists = check_exists
        super().__init__(manifest=manifest, **kwargs)

    def load_data_list(self) -> list[dict]:
        self._require_manifest()
        pairs = read_pairs(self.manifest, self.source_manifest, self.check_exists)
        for p in pairs:
            p.update(reduce_zero_label=False, seg_fields=[])
        return pairs


@DATASETS.register_module()
class ZoDiManifestDataset(_ManifestDatasetBase):
    """Labelled images of a samples (or transfer) manifest (see :func:`read_samples`)."""

    def __init__(self, manifest: str = "", image_column: str | None = None, **kwargs: Any) -> None:
        self.image_column = image_column
        super().__init__(manifest=manifest, **kwargs)

    def load_data_list(self) -> list[dict]:
        self._require_manifest()
        items = read_samples(self.manifest, self.image_column)
        for item in items:
            item.update(reduce_zero_label=False, seg_fields=[])
        return items
