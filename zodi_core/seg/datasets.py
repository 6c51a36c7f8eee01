"""Manifest-backed MMSeg datasets (Cityscapes' classes): training and evaluation read
manifests, never folders; pairs are joined on ``sample_id``, never on row order (the authors'
release paired files by listing order).
"""

from __future__ import annotations

import copy
from itertools import pairwise
from typing import Any

from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

from zodi_core import storage
from zodi_core.manifest import ManifestError, manifest_metadata, read_manifest

#: Transfer rows usable for training: generated ("ok") or reused from a previous run ("skipped").
USABLE_STATUSES = ("ok", "skipped")


def _rows(manifest: str, schema=None, generated=False, table=None, required=True) -> list:
    """The rows of a manifest sorted by ``sample_id`` (unique); ``generated``: only the rows
    with a usable generated image; ``required``: an empty manifest is an error."""
    table = read_manifest(manifest, schema) if table is None else table
    if required and table.num_rows == 0:
        raise ManifestError(f"{manifest}: the manifest is empty (0 rows)")
    rows = table.to_pylist()
    if generated:
        rows = [r for r in rows if r["status"] in USABLE_STATUSES and r.get("generated_uri")]
        if not rows:
            raise ManifestError(
                f"{manifest}: no usable generated image among {table.num_rows} rows (expected "
                f"status in {USABLE_STATUSES} with a generated_uri)"
            )
    rows.sort(key=lambda r: r["sample_id"])
    for a, b in pairwise(rows):
        if a["sample_id"] == b["sample_id"]:
            raise ManifestError(f"{manifest}: sample_id {a['sample_id']!r} appears more than once")
    return rows


def _item(sid: str, img: str, label: str, fmt: str, domain: str) -> dict[str, Any]:
    # label_format is checked where a label is read (datasets.io.decode_label), naming the sample.
    return dict(sample_id=sid, img_path=img, seg_map_path=label, label_format=fmt, domain=domain)


def read_pairs(manifest: str, source_manifest: str | None = None) -> list[dict[str, Any]]:
    """The training pairs of a transfer manifest, sorted by ``sample_id``; with
    ``source_manifest`` (a samples manifest) the source image and label are its row of the same
    ``sample_id``. Every generated image is checked up front."""
    sources = None
    if source_manifest is not None:
        sources = {r["sample_id"]: r for r in _rows(source_manifest, "samples", required=False)}
    pairs = []
    for r in _rows(manifest, "transfer", generated=True):
        sid = r["sample_id"]
        if sources is not None and sid not in sources:
            raise ManifestError(
                f"{manifest}: sample {sid!r} has no row in the source manifest {source_manifest}"
            )
        src = sources[sid] if sources is not None else dict(r, image_uri=r["source_uri"])
        item = _item(sid, src["image_uri"], src["label_uri"], src["label_format"], r["domain"])
        if not storage.exists(r["generated_uri"]):
            raise FileNotFoundError(
                f"{manifest}: sample {sid!r}: generated image {r['generated_uri']} not found"
            )
        pairs.append(dict(item, gen_path=r["generated_uri"]))
    return pairs


def read_samples(manifest: str, image_column: str | None = None) -> list[dict[str, Any]]:
    """One item per row of a samples or transfer manifest, sorted by ``sample_id``;
    ``image_column`` ``generated_uri`` gives the proxy set (rows without one are skipped)."""
    table = read_manifest(manifest)
    if (schema := manifest_metadata(table).get("schema", "")) not in ("samples", "transfer"):
        raise ManifestError(
            f"{manifest}: expected a 'samples' or 'transfer' manifest, found {schema or 'none'!r}"
        )
    column = image_column or ("image_uri" if schema == "samples" else "source_uri")
    if column not in table.column_names:
        raise ManifestError(
            f"{manifest}: image_column expected one of {table.column_names}, received {column!r}"
        )
    return [
        _item(r["sample_id"], r[column], r["label_uri"], r["label_format"], r["domain"])
        for r in _rows(manifest, generated=column == "generated_uri", table=table)
    ]


class _ManifestDatasetBase(BaseSegDataset):
    METAINFO = copy.deepcopy(CityscapesDataset.METAINFO)

    def __init__(self, manifest: str = "", **kwargs: Any) -> None:
        if "ann_file" in kwargs:
            raise TypeError(
                f"{type(self).__name__}: pass the manifest URI as manifest=, not ann_file="
            )
        self.manifest = manifest
        super().__init__(ann_file=manifest, **kwargs)

    def load_data_list(self) -> list[dict]:  # the manifest: set by train.set_manifests
        return [dict(item, reduce_zero_label=False, seg_fields=[]) for item in self.items()]


@DATASETS.register_module()
class ZoDiPairedDataset(_ManifestDatasetBase):
    """Source/generated pairs of a transfer manifest (see :func:`read_pairs`)."""

    def __init__(
        self, manifest: str = "", source_manifest: str | None = None, **kwargs: Any
    ) -> None:
        self.source_manifest = source_manifest
        super().__init__(manifest=manifest, **kwargs)

    def items(self) -> list[dict[str, Any]]:
        return read_pairs(self.manifest, self.source_manifest)


@DATASETS.register_module()
class ZoDiManifestDataset(_ManifestDatasetBase):
    """Labelled images of a samples (or transfer) manifest (see :func:`read_samples`)."""

    def __init__(self, manifest: str = "", image_column: str | None = None, **kwargs: Any) -> None:
        self.image_column = image_column
        super().__init__(manifest=manifest, **kwargs)

    def items(self) -> list[dict[str, Any]]:
        return read_samples(self.manifest, self.image_column)
