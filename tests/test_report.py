"""zodi_core.report: run summaries."""

from __future__ import annotations

from zodi_core import report


def test_run_summary_line_counts():
    s = report.RunSummary(shards_computed=["shard-00001"], shards_cached=["shard-00000"])
    s.add_images({"written": 3, "skipped": 1, "failed": 0})
    assert (
        s.line() == "shards: 1 computed, 1 cached, 0 failed; images: 3 written, 1 skipped, 0 failed"
    )
