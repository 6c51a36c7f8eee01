"""Content-addressed outputs, the storage checks behind cache hits, and `gc` (issue 9)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_models import tiny_transfer_config

from zodi_core import layout
from zodi_core.config import DatasetSpec, TransferConfig


@pytest.fixture
def samples(synthetic_root: Path, tmp_path: Path) -> str:
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="train")
    return ingest_dataset(spec, str(tmp_path / "samples.parquet"), progress=False).manifest_uri


def _transfer(samples: str, config: TransferConfig, out: Path, components, n: int = 2):
    from zodi_core.manifest import read_manifest
    from zodi_core.transfer.runner import transfer_manifest

    ids = sorted(read_manifest(samples, "samples").column("sample_id").to_pylist())[:n]
    return transfer_manifest(
        samples, config, str(out), sample_ids=ids, components=components, progress=False
    )


def test_layout_generated_image_key_includes_domain_and_generation_digest():
    key = layout.generated_image_key("night", "abc123", "aachen_000000_000019")
    assert key == "images/night/abc123/aachen_000000_000019.png"
    assert layout.paired_manifest_key("fog") == "paired/domain=fog/paired.parquet"
    shard = layout.shard_manifest_key("fog", "shard-00001", "s1", "g2")
    assert shard == "transfer/fog/shards/shard-00001-s1-g2.parquet"


def test_generation_digest_covers_settings_and_model_folder_content(tiny_models_dir, tmp_path):
    from zodi_core.transfer.lineage import generation_digest

    config = tiny_transfer_config(tiny_models_dir)
    assert generation_digest(config) == generation_digest(config.replace(batch_size=1))
    assert generation_digest(config) != generation_digest(config.replace(strength=0.5))
    copy = tmp_path / "models"
    shutil.copytree(tiny_models_dir, copy)
    moved = config.replace(models=config.models.model_copy(update={"base": str(copy)}))
    before = generation_digest(moved)
    scheduler = copy / "scheduler" / "scheduler_config.json"
    scheduler.write_text(scheduler.read_text().replace("scaled_linear", "linear"))
    assert generation_digest(moved) != before  # other weights/config in the same folder


def test_same_settings_give_identical_png_bytes(
    samples, tiny_components, tiny_models_dir, tmp_path
):
    config = tiny_transfer_config(tiny_models_dir)
    first = _transfer(samples, config, tmp_path / "one", tiny_components)
    second = _transfer(samples, config, tmp_path / "two", tiny_components)
    for a, b in zip(first.rows, second.rows, strict=True):
        assert a["status"] == b["status"] == "ok"
        assert Path(a["generated_uri"]).read_bytes() == Path(b["generated_uri"]).read_bytes()
        assert a["seconds"] > 0  # timings stay in the manifest


def test_missing_outputs_names_deleted_images_and_manifests(
    samples, tiny_components, tiny_models_dir, tmp_path
):
    from zodi_core.sharding import missing_outputs

    config = tiny_transfer_config(tiny_models_dir)
    result = _transfer(samples, config, tmp_path / "out", tiny_components)
    uri = result.manifest_uri
    assert missing_outputs([uri]) == {}
    victim = result.rows[1]["generated_uri"]
    os.remove(victim)
    assert missing_outputs([uri]) == {uri: [victim]}
    gone = str(tmp_path / "out" / "nothing.parquet")
    assert missing_outputs([gone]) == {gone: [gone]}


def test_gc_lists_then_deletes_only_unreferenced_generations(
    samples, tiny_components, tiny_models_dir, tmp_path
):
    from zodi_core.gc import delete_garbage, find_garbage

    base = tiny_models_dir
    out = tmp_path / "out"
    old = _transfer(samples, tiny_transfer_config(base, strength=0.9), out, tiny_components)
    new = _transfer(samples, tiny_transfer_config(base, strength=0.5), out, tiny_components)
    assert old.config_digest != new.config_digest
    # the paired manifest now names the 0.5 generation only
    paired = pq.read_table(layout.paired_manifest_uri(str(out), "night")).to_pylist()
    assert {r["config_digest"] for r in paired} == {new.config_digest}

    found = find_garbage(str(out))
    assert len(found) == 1
    assert sorted(found[0].images) == sorted(r["generated_uri"] for r in old.rows)
    assert found[0].referenced_images == 2
    for row in old.rows:  # a dry run deletes nothing
        assert os.path.exists(row["generated_uri"])

    assert delete_garbage(found) == 2
    for row in old.rows:
        assert not os.path.exists(row["generated_uri"])
    for row in new.rows:
        assert os.path.exists(row["generated_uri"])
    assert find_garbage(str(out))[0].uris == []


def test_transient_storage_error_stops_the_transfer_with_the_counts_written_before_it(
    samples, tiny_components, tiny_models_dir, tmp_path, monkeypatch
):
    """A transient error (S3 outage) is not a failed image: it propagates, so the shard task
    retries it, and carries what was written before it for the run's summary."""
    from zodi_core import storage
    from zodi_core.transfer import runner

    read_image = runner.read_image
    calls = []

    def flaky(uri, **options):
        calls.append(uri)
        if len(calls) == 2:
            raise storage.TransientStorageError(f"{uri}: connection reset; retry")
        return read_image(uri, **options)

    monkeypatch.setattr(runner, "read_image", flaky)
    config = tiny_transfer_config(tiny_models_dir, batch_size=1)
    with pytest.raises(storage.TransientStorageError) as err:
        _transfer(samples, config, tmp_path / "out", tiny_components)
    assert runner.partial_counts(err.value) == {
        "manifest": layout.paired_manifest_uri(str(tmp_path / "out"), "night"),
        "config_digest": runner.generation_digest(config),
        "written": 1,
        "skipped": 0,
        "failed": 0,
    }


def test_artifact_keys_are_per_experiment_and_valid_prefect_keys():
    import re

    a = layout.artifact_key("report", "s3://bucket/runs/Night_v2")
    b = layout.artifact_key("report", "/data/runs/night_v3")
    assert a != b and a == layout.artifact_key("report", "s3://bucket/runs/Night_v2")
    for key in (a, b, layout.artifact_key("shards", "/")):
        assert re.fullmatch(r"[a-z0-9-]+", key) and key.startswith("zodi-")
