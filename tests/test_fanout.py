"""zodi_core.fanout: shard groups, relaunching only failed children, outcomes and summaries."""

from __future__ import annotations

import pytest

from zodi_core import fanout, sharding
from zodi_core.config import TransferConfig
from zodi_core.fanout import ChildOutcome, run_children


def test_group_shards_and_select_shards():
    assert sharding.group_shards(5, 2) == [[0, 1], [2, 3], [4]]
    assert sharding.group_shards(2, 4) == [[0, 1]]
    with pytest.raises(ValueError, match="shards_per_run"):
        sharding.group_shards(3, 0)
    shards = [sharding.ShardRef(i, "m", (f"s{i}",), f"d{i}") for i in range(3)]
    assert [s.index for s in sharding.select_shards(shards, [2, 0])] == [0, 2]
    with pytest.raises(ValueError, match="unknown \\[7\\]"):
        sharding.select_shards(shards, [7])


def test_run_children_reruns_only_the_failed_child():
    launched: list[tuple[list[int], int]] = []
    fail_once = {2}  # the group starting at shard 2 fails on its first attempt

    def launch(group, attempt):
        launched.append((group, attempt))
        return f"run-{group[0]}-{attempt}"

    def wait(ids):
        out = {}
        for run_id in ids:
            _, first, attempt = run_id.split("-")
            ok = not (int(first) in fail_once and attempt == "0")
            state = "Completed" if ok else "Failed"
            out[run_id] = {"state": state, "ok": ok, "message": "", "result": None}
        return out

    report = run_children([[0, 1], [2, 3], [4]], launch, wait, retries=1, domain="fog")
    assert launched == [([0, 1], 0), ([2, 3], 0), ([4], 0), ([2, 3], 1)]
    assert report.failed() == [] and len(report.children) == 4
    assert report.final()[2].attempt == 1

    # Without retries the failure stands, and names its group.
    launched.clear()
    report = run_children([[0, 1], [2, 3]], launch, wait, retries=0, domain="fog")
    assert [c.group for c in report.failed()] == [[2, 3]]
    assert fanout.failure_message(report).startswith("fan-out children failed: shards [2, 3]")
    with pytest.raises(ValueError, match="child_retries: expected an integer >= 0"):
        run_children([[0]], launch, wait, retries=-1, domain="fog")


def _child(group: list[int], end: dict) -> ChildOutcome:
    """The outcome run_children records for one child whose final state is ``end``."""
    report = run_children([group], lambda g, a: "id-1", lambda ids: {"id-1": end}, 0, "fog")
    return report.children[0]


def test_child_outcome_reads_only_a_transfer_result():
    summary = {"shards_computed": ["shard-00000"], "images_written": 2}
    end = {"state": "Completed", "ok": True, "message": "", "result": {"domains": {"fog": summary}}}
    child = _child([0, 1], end)
    assert child.ok and child.summary == summary and child.group == [0, 1]
    # A crashed child has no result: no summary, its message kept.
    end = {"state": "Crashed", "ok": False, "message": "worker lost", "result": None}
    child = _child([2], end)
    assert not child.ok and child.summary is None and child.message == "worker lost"


def test_merge_child_summaries_counts_the_final_attempt_of_each_group():
    first = {"shards_computed": [], "shards_failed": {"shard-00001": "oom"}, "images_failed": 2}
    again = {"shards_computed": ["shard-00001"], "images_written": 2}
    report = fanout.FanoutReport(
        [
            ChildOutcome(
                [0], 0, "a", "Completed", True, summary={"shards_cached": ["shard-00000"]}
            ),
            ChildOutcome([1], 0, "b", "Failed", False, summary=first),
            ChildOutcome([1], 1, "c", "Completed", True, summary=again),
        ]
    )
    summary = fanout.merge_child_summaries(report)
    assert summary.shards_cached == ["shard-00000"] and summary.shards_computed == ["shard-00001"]
    assert summary.shards_failed == {} and summary.images_written == 2
    result = fanout.fanout_result("fog", report, summary, "paired.parquet")
    assert result["paired"] == "paired.parquet" and len(result["children"]) == 3


def test_child_parameters_are_transfer_flow_parameters():
    import inspect

    from flows.transfer import transfer_flow

    params = fanout.child_parameters(
        "s.parquet", "fog", "/out", TransferConfig.preset("demo", domain="fog"), 4, [2, 3]
    )
    assert set(params) <= set(inspect.signature(transfer_flow.fn).parameters)
    assert params["domains"] == ["fog"] and params["shard_indices"] == [2, 3]
    assert TransferConfig(**params["transfer"]).domain == "fog"
    assert fanout.child_run_name("fog", [2, 3], 1) == "fog-shards-2-3-try1"
