"""Parquet manifests: schemas, atomic write, validated read.

Schema name and version live in the file metadata (``zodi.schema``, ``zodi.schema_version``) and
are checked on read. Every stage reads the previous stage's manifest, never its folders.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from zodi_core import storage

SCHEMA_VERSION = 1

_STR = pa.string()


def _schema(columns: dict[str, pa.DataType], nullable: str = "") -> pa.Schema:
    """A schema of ``columns`` in order; those named in ``nullable`` may hold nulls."""
    names = nullable.split()
    return pa.schema([pa.field(n, t, nullable=n in names) for n, t in columns.items()])


def _columns(names: str, dtype: pa.DataType = _STR) -> dict[str, pa.DataType]:
    return dict.fromkeys(names.split(), dtype)


#: One row per labelled sample of a dataset (output of ingestion); label_format is "label_ids"
#: or "train_ids".
SAMPLE_SCHEMA = _schema(
    _columns("sample_id dataset split domain image_uri label_uri label_format")
    | {"width": pa.int32(), "height": pa.int32()}
    | _columns("image_sha256 label_sha256")
)

#: One row per transferred image (output of the transfer stage), joined to sources on sample_id.
#: image_bytes, image_sha256: size and SHA-256 (lowercase hex) of the stored PNG (null: no image).
#: model_revisions: JSON {component: id@rev}. status: "ok", "skipped" or "failed". The score and
#: filter columns are :mod:`zodi_core.quality`'s, null until scored. Nullable columns that older
#: manifests lack read as nulls.
TRANSFER_SCHEMA = _schema(
    _columns("sample_id domain source_uri label_uri label_format generated_uri")
    | {"image_bytes": pa.int64(), "image_sha256": _STR, "prompt": _STR, "negative_prompt": _STR}
    | {"strength": pa.float32(), "seed": pa.int64(), "k": pa.int32(), "first_timestep": pa.int32()}
    | _columns("palette method model_revisions config_digest status error")
    | {"seconds": pa.float32()}
    | _columns("layout_miou layout_pixel_acc clip_score clip_direction", pa.float32())
    | {"kept": pa.bool_(), "drop_reason": _STR},
    nullable="generated_uri image_bytes image_sha256 error layout_miou layout_pixel_acc "
    "clip_score clip_direction kept drop_reason",
)

#: Ingestion rejects (written beside the manifest with --skip-invalid).
REJECT_SCHEMA = _schema(_columns("path reason"))

SCHEMAS: dict[str, pa.Schema] = {
    "samples": SAMPLE_SCHEMA,
    "transfer": TRANSFER_SCHEMA,
    "rejects": REJECT_SCHEMA,
}


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or of the wrong schema."""


def write_manifest(
    table: pa.Table | Iterable[Mapping[str, Any]],
    uri: str,
    schema_name: str,
    extra_metadata: Mapping[str, str] | None = None,
    **storage_options: Any,
) -> str:
    """Validate and atomically write a manifest (a table or row dicts); return its URI."""
    schema = SCHEMAS[schema_name]
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(list(table), schema=schema)
    table = _add_missing_nullable(table, schema)
    if not table.schema.equals(schema, check_metadata=False):
        try:
            table = table.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ManifestError(
                f"{uri}: table does not match the {schema_name} schema: {err}"
            ) from None
    for field in schema:  # Arrow keeps nulls in a non-nullable field: refuse them here
        if not field.nullable and table[field.name].null_count:
            i = table[field.name].is_null().to_pylist().index(True)
            raise ManifestError(
                f"{schema_name} manifest row {i}: column {field.name!r} is required"
            )
    meta = {"schema": schema_name, "schema_version": SCHEMA_VERSION, **(extra_metadata or {})}
    table = table.replace_schema_metadata({f"zodi.{k}": str(v) for k, v in meta.items()})
    table.validate(full=True)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return storage.write_bytes(uri, buf.getvalue(), **storage_options)


def read_manifest(uri: str, schema_name: str | None = None, **storage_options: Any) -> pa.Table:
    """Read a manifest and check its schema name and version."""
    try:
        data = storage.read_bytes(uri, **storage_options)
    except FileNotFoundError:
        raise ManifestError(f"{uri}: manifest not found") from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"{uri}: not a readable Parquet file ({err})") from None
    meta = manifest_metadata(table)
    name, version = meta.get("schema", ""), meta.get("schema_version", "0")
    if schema_name is not None and name != schema_name:
        raise ManifestError(
            f"{uri}: expected a {schema_name!r} manifest, found {name or 'no schema'!r}"
        )
    if int(version) > SCHEMA_VERSION:
        raise ManifestError(
            f"{uri}: schema version {version} is newer than this zodi ({SCHEMA_VERSION}); upgrade"
        )
    if name in SCHEMAS:
        table = _add_missing_nullable(table, SCHEMAS[name])
    return table


def _add_missing_nullable(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Add the nullable columns older manifests lack, as nulls, in schema order (to concatenate)."""
    missing = [f for f in schema if f.nullable and f.name not in table.column_names]
    for field in missing:
        table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    if missing and set(table.column_names) == set(schema.names):
        table = table.select(schema.names)
    return table


def manifest_metadata(table: pa.Table) -> dict[str, str]:
    """The ``zodi.*`` key-value metadata of a manifest, without the prefix."""
    meta = table.schema.metadata or {}
    return {k.decode()[5:]: v.decode() for k, v in meta.items() if k.startswith(b"zodi.")}


def summarize(table: pa.Table) -> dict[str, Any]:
    """Counts per dataset/split/domain, for printing."""
    out: dict[str, Any] = {"rows": table.num_rows, "metadata": manifest_metadata(table)}
    keys = [c for c in ("dataset", "split", "domain", "status") if c in table.column_names]
    if keys and table.num_rows:
        out["groups"] = table.group_by(keys).aggregate([([], "count_all")]).to_pylist()
    return out
