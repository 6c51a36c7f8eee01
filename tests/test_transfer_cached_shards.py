"""A cached rerun of transfer_flow submits no task for an intact cached shard (issue 21: a rerun
of hundreds of shards costs one check, not one Prefect task each), and still recomputes a shard
whose outputs storage lost."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_models import tiny_transfer_config

from zodi_core.config import DatasetSpec

pytestmark = pytest.mark.slow


def test_cached_rerun_submits_only_shards_not_intact_in_storage(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path, monkeypatch
):
    import flows.transfer
    from flows.ingest import ingest_flow
    from flows.transfer import transfer_flow

    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="train")
    out = tmp_path / "artifacts"
    samples_uri = ingest_flow([spec], str(out))[spec.manifest_name]
    config = tiny_transfer_config(tiny_models_dir)
    submitted: list[list[str]] = []
    real_submit = flows.transfer.submit_shards

    def spy(shards, *args, **kwargs):
        submitted.append([s.name for s in shards])
        return real_submit(shards, *args, **kwargs)

    monkeypatch.setattr(flows.transfer, "submit_shards", spy)

    def run() -> dict:
        state = transfer_flow(samples_uri, ["night"], str(out), config, 4, return_state=True)
        assert state.is_completed(), state.message
        return state.result()

    first = run()  # 8 images: 2 shards, both computed
    paired = first["paired"]["night"]
    rows = pq.read_table(paired).to_pylist()
    assert submitted == [["shard-00000", "shard-00001"]]

    second = run()  # all cached and intact: nothing submitted, both counted as cached
    summary = second["domains"]["night"]
    assert submitted[1] == []
    assert sorted(summary["shards_cached"]) == ["shard-00000", "shard-00001"]
    assert (summary["images_written"], summary["images_skipped"]) == (0, 8)
    assert pq.read_table(second["paired"]["night"]).to_pylist() == rows

    Path(rows[5]["generated_uri"]).unlink()  # storage lost an image of shard 1
    third = run()
    assert submitted[2] == ["shard-00001"]
    summary = third["domains"]["night"]
    assert summary["shards_cached"] == ["shard-00000"] and summary["images_written"] == 1
    assert Path(rows[5]["generated_uri"]).read_bytes()
