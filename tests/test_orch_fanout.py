"""fanout_transfer_flow on the test session's Prefect server, its child runs faked (no worker): one
child per shard group, only a failed child relaunched, every shard's manifest merged once all
children succeed; a child that fails every attempt fails the flow, and nothing is merged."""

from __future__ import annotations

from test_sharding import _samples

import flows.fanout
from zodi_core import layout, manifest, sharding
from zodi_core.config import TransferConfig


def _fake_children(monkeypatch, fails: dict[int, int]) -> tuple[list, list]:
    """Children that fail their first ``fails[first shard]`` attempts; records launches/merges."""
    launched, merged = [], []

    def launch(deployment, parameters, name):
        launched.append(parameters["shard_indices"])
        return name  # the fake run id: night-shards-<first>-<last>-try<attempt>

    def wait(ids, poll_seconds, timeout_seconds):
        out = {}
        for name in ids:
            first, attempt = int(name.split("-")[2]), int(name.rpartition("try")[2])
            ok = attempt >= fails.get(first, 0)
            state, message = ("Completed", "") if ok else ("Failed", "boom")
            out[name] = {"state": state, "ok": ok, "message": message, "result": None}
        return out

    def merge(uris, out_uri, domain):
        merged.append((uris, out_uri, domain))
        return {"uri": out_uri}

    monkeypatch.setattr(flows.fanout, "launch_child_run_task", launch)
    monkeypatch.setattr(flows.fanout, "wait_for_flow_runs_task", wait)
    monkeypatch.setattr(flows.fanout, "merge_shard_manifests_task", merge)
    return launched, merged


def test_fanout_flow_relaunches_a_failed_child_then_merges_every_shard(
    prefect_harness, tmp_path, monkeypatch
):
    samples = manifest.write_manifest(_samples(6), str(tmp_path / "s.parquet"), "samples")
    launched, merged = _fake_children(monkeypatch, fails={2: 1})
    config, out = TransferConfig.preset("demo"), str(tmp_path / "out")
    result = flows.fanout.fanout_transfer_flow(
        samples, "night", out, config, shard_size=2, shards_per_run=1
    )
    assert launched == [[0], [1], [2], [2]]  # three groups, the third once more
    paired = layout.paired_manifest_uri(out, "night")
    night = config.replace(domain="night")
    shards = sharding.shard_manifest(samples, 2)
    assert merged == [
        ([sharding.shard_manifest_uri(out, s, night) for s in shards], paired, "night")
    ]
    assert result["paired"] == paired and len(result["children"]) == 4


def test_fanout_flow_fails_naming_the_child_that_failed_every_attempt(
    prefect_harness, tmp_path, monkeypatch
):
    samples = manifest.write_manifest(_samples(4), str(tmp_path / "s.parquet"), "samples")
    launched, merged = _fake_children(monkeypatch, fails={1: 9})
    state = flows.fanout.fanout_transfer_flow(
        samples, "night", str(tmp_path / "out"), TransferConfig.preset("demo"), shard_size=2,
        shards_per_run=1, child_retries=1, return_state=True,
    )  # fmt: skip
    assert state.is_failed() and launched == [[0], [1], [1]]
    assert state.message.startswith("fan-out children failed: shards [1]")
    assert merged == []
