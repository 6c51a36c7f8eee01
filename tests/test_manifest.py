"""Parquet manifests: round trip, schema name and version checks, atomic write."""

from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zodi_core import manifest, storage
from zodi_core.manifest import SCHEMA_VERSION, ManifestError, read_manifest, write_manifest


def _sample_rows(n: int = 5) -> list[dict]:
    return [
        {
            "sample_id": f"aachen_{i:06d}_000019",
            "dataset": "cityscapes",
            "split": "train",
            "domain": "source",
            "image_uri": f"/data/cityscapes/leftImg8bit/train/aachen/aachen_{i:06d}_000019.png",
            "label_uri": f"/data/cityscapes/gtFine/train/aachen/aachen_{i:06d}_000019.png",
            "label_format": "label_ids",
            "width": 2048,
            "height": 1024,
            "image_sha256": f"{i:064x}",
            "label_sha256": f"{i + 1:064x}",
        }
        for i in range(n)
    ]


def _transfer_rows() -> list[dict]:
    base = {
        "sample_id": "a", "domain": "night", "source_uri": "s", "label_uri": "l",
        "label_format": "train_ids", "prompt": "driving at night", "negative_prompt": "",
        "strength": 0.9, "seed": 42, "k": 2, "first_timestep": 901, "palette": "ade20k",
        "method": "zodi", "model_revisions": "{}", "config_digest": "abc", "seconds": 1.5,
    }  # fmt: skip
    return [
        {**base, "generated_uri": "g", "status": "ok", "error": None},
        {**base, "sample_id": "b", "generated_uri": None, "status": "failed", "error": "OOM"},
    ]


@pytest.mark.parametrize(
    ("schema_name", "rows"),
    [
        ("samples", _sample_rows()),
        ("transfer", _transfer_rows()),
        ("rejects", [{"path": "/x.png", "reason": "corrupt or truncated image"}]),
    ],
)
def test_manifest_round_trip(tmp_path, schema_name, rows):
    uri = str(tmp_path / f"{schema_name}.parquet")
    assert write_manifest(rows, uri, schema_name, extra_metadata={"run": "r1"}) == uri
    table = read_manifest(uri, schema_name)
    table.validate(full=True)
    expected = pa.Table.from_pylist(rows, schema=manifest.SCHEMAS[schema_name])
    assert table.equals(expected)
    assert table.schema.equals(manifest.SCHEMAS[schema_name], check_metadata=False)
    assert manifest.manifest_metadata(table) == {
        "schema": schema_name,
        "schema_version": str(SCHEMA_VERSION),
        "run": "r1",
    }


def test_manifest_round_trip_from_a_table_with_columns_reordered(tmp_path):
    table = pa.Table.from_pylist(_sample_rows(), schema=manifest.SAMPLE_SCHEMA)
    shuffled = table.select(list(reversed(table.column_names)))
    uri = write_manifest(shuffled, str(tmp_path / "m.parquet"), "samples")
    assert read_manifest(uri, "samples").equals(table)


def test_read_manifest_refuses_another_schema(tmp_path):
    uri = write_manifest(_sample_rows(), str(tmp_path / "m.parquet"), "samples")
    with pytest.raises(ManifestError, match=r"expected a 'transfer' manifest, found 'samples'"):
        read_manifest(uri, "transfer")


def test_read_manifest_refuses_a_newer_schema_version(tmp_path):
    table = pa.Table.from_pylist(
        _sample_rows(), schema=manifest.SAMPLE_SCHEMA
    ).replace_schema_metadata(
        {b"zodi.schema": b"samples", b"zodi.schema_version": str(SCHEMA_VERSION + 1).encode()}
    )
    path = tmp_path / "future.parquet"
    pq.write_table(table, path)
    with pytest.raises(ManifestError, match=rf"schema version {SCHEMA_VERSION + 1} is newer"):
        read_manifest(str(path), "samples")


def test_read_manifest_without_zodi_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist(_sample_rows(), schema=manifest.SAMPLE_SCHEMA), path)
    with pytest.raises(ManifestError, match="found 'no schema'"):
        read_manifest(str(path), "samples")


def test_read_manifest_missing_or_not_parquet(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(str(tmp_path / "absent.parquet"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        read_manifest(str(tmp_path / "bad.parquet"))


def test_write_manifest_names_a_missing_required_value(tmp_path):
    rows = _sample_rows()
    rows[3]["label_sha256"] = None
    with pytest.raises(ManifestError, match=r"row 3: column 'label_sha256' is required"):
        write_manifest(rows, str(tmp_path / "m.parquet"), "samples")
    assert list(tmp_path.iterdir()) == []


def test_write_manifest_refuses_a_table_of_another_schema(tmp_path):
    table = pa.table({"sample_id": ["a"], "other": [1]})
    with pytest.raises(ManifestError, match="does not match the samples schema"):
        write_manifest(table, str(tmp_path / "m.parquet"), "samples")
    assert list(tmp_path.iterdir()) == []


def _fail_replace(src, dst):
    """Stands in for os.replace: the publish step fails (disk full, process killed, ...)."""
    raise OSError("simulated failure while publishing")


def test_write_manifest_failure_leaves_nothing_and_keeps_the_old_one(tmp_path, monkeypatch):
    uri = str(tmp_path / "m.parquet")
    write_manifest(_sample_rows(2), uri, "samples")
    before = (tmp_path / "m.parquet").read_bytes()
    monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises(storage.StorageError, match="write failed: simulated failure"):
        write_manifest(_sample_rows(7), uri, "samples")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]  # no .part left over
    assert (tmp_path / "m.parquet").read_bytes() == before
    assert read_manifest(uri, "samples").num_rows == 2


def test_write_manifest_failure_on_a_new_path_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises(storage.StorageError, match="write failed: simulated failure"):
        write_manifest(_sample_rows(), str(tmp_path / "new" / "m.parquet"), "samples")
    monkeypatch.undo()
    assert list((tmp_path / "new").iterdir()) == []


def test_manifest_is_zstd_parquet_readable_by_plain_pyarrow(tmp_path):
    uri = write_manifest(_sample_rows(), str(tmp_path / "m.parquet"), "samples")
    meta = pq.ParquetFile(uri).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(io.BytesIO((tmp_path / "m.parquet").read_bytes())).num_rows == 5


def test_summarize_counts_groups(tmp_path):
    rows = _sample_rows(3) + [dict(r, split="val") for r in _sample_rows(2)]
    uri = write_manifest(rows, str(tmp_path / "m.parquet"), "samples")
    summary = manifest.summarize(read_manifest(uri))
    assert summary["rows"] == 5
    counts = {g["split"]: g["count_all"] for g in summary["groups"]}
    assert counts == {"train": 3, "val": 2}
