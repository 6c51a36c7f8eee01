"""zodi_core.sharding: shards of a samples manifest and merging shard manifests."""

from __future__ import annotations

import random

import pytest

from zodi_core import layout, manifest, sharding


def _samples(n: int, shuffle_seed: int | None = None) -> list[dict]:
    rows = [
        {
            "sample_id": f"city_{i:06d}_000019",
            "dataset": "cityscapes",
            "split": "train",
            "domain": "source",
            "image_uri": f"/data/{i}.png",
            "label_uri": f"/data/{i}_label.png",
            "label_format": "label_ids",
            "width": 256,
            "height": 128,
            "image_sha256": f"img{i}",
            "label_sha256": f"lab{i}",
        }
        for i in range(n)
    ]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    return rows


def test_shard_manifest_sorted_and_independent_of_row_order(tmp_path):
    a = manifest.write_manifest(_samples(10), str(tmp_path / "a.parquet"), "samples")
    b = manifest.write_manifest(
        _samples(10, shuffle_seed=3), str(tmp_path / "b.parquet"), "samples"
    )
    shards_a = sharding.shard_manifest(a, 4)
    shards_b = sharding.shard_manifest(b, 4)
    assert [len(s.sample_ids) for s in shards_a] == [4, 4, 2]
    assert [s.sample_ids for s in shards_a] == [s.sample_ids for s in shards_b]
    assert [s.digest for s in shards_a] == [s.digest for s in shards_b]
    assert shards_a[0].sample_ids[0] == "city_000000_000019"


def test_shard_digest_changes_with_image_content(tmp_path):
    rows = _samples(4)
    a = manifest.write_manifest(rows, str(tmp_path / "a.parquet"), "samples")
    rows[1]["image_sha256"] = "changed"
    b = manifest.write_manifest(rows, str(tmp_path / "b.parquet"), "samples")
    assert sharding.shard_manifest(a, 4)[0].digest != sharding.shard_manifest(b, 4)[0].digest


def test_shard_manifest_rejects_bad_size_and_empty(tmp_path):
    uri = manifest.write_manifest(_samples(2), str(tmp_path / "a.parquet"), "samples")
    with pytest.raises(ValueError, match="shard_size.*received 0"):
        sharding.shard_manifest(uri, 0)
    empty = manifest.write_manifest([], str(tmp_path / "e.parquet"), "samples")
    with pytest.raises(ValueError, match="empty"):
        sharding.shard_manifest(empty, 2)


def _transfer_rows(ids, status="ok"):
    return [
        {
            "sample_id": i, "domain": "night", "source_uri": f"/s/{i}.png", "label_uri": f"/l/{i}.png",
            "label_format": "label_ids", "generated_uri": f"/g/{i}.png", "prompt": "p",
            "negative_prompt": "n", "strength": 0.9, "seed": 1, "k": 18, "first_timestep": 901,
            "palette": "ade20k", "method": "zodi", "model_revisions": "{}", "config_digest": "abc",
            "status": status, "error": None, "seconds": 0.1,
        }
        for i in ids
    ]  # fmt: skip


def test_merge_shard_manifests_sorts_and_refuses_duplicates(tmp_path):
    s1 = manifest.write_manifest(
        _transfer_rows(["b", "a"]), str(tmp_path / "1.parquet"), "transfer"
    )
    s2 = manifest.write_manifest(_transfer_rows(["c"]), str(tmp_path / "2.parquet"), "transfer")
    out = layout.paired_manifest_uri(str(tmp_path), "night")
    merged = sharding.merge_shard_manifests([s2, s1], out, "night")
    assert merged["rows"] == 3 and merged["config_digests"] == ["abc"]
    table = manifest.read_manifest(out, "transfer")
    assert table.column("sample_id").to_pylist() == ["a", "b", "c"]
    assert manifest.manifest_metadata(table)["domain"] == "night"
    with pytest.raises(ValueError, match=r"more than one shard.*'a'"):
        sharding.merge_shard_manifests([s1, s1], out, "night")
