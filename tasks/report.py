"""Report tasks: sample grids and the final report (storage + Prefect artifacts)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from tasks._policy import IO_RETRIES
from tasks.artifacts import publish_markdown, publish_table
from zodi_core import layout, report
from zodi_core.config import ReportConfig


@task(**IO_RETRIES)
def render_sample_grid_task(paired_uri: str, root: str, domain: str) -> str:
    """Render a source | condition | generated grid of a domain's first pairs; return its URI."""
    return report.render_sample_grid(paired_uri, layout.sample_grid_uri(root, domain))


@task(**IO_RETRIES)
def write_report_task(
    results: dict[str, Any], root: str, report_config: ReportConfig | None = None
) -> dict[str, Any]:
    """Write report.json/report.md to storage; publish the report (images shown as
    :class:`ReportConfig` says), the shard table and the per-class IoU table as artifacts."""
    # 1. per-class IoU and confusion matrices of every evaluation go into the report
    evaluations = report.read_evaluations(results.get("results", {}))
    full = {**results, "evaluations": evaluations}
    uris = report.write_report(full, root)

    # 2. the report artifact, with images the browser can load (presigned or embedded)
    def render() -> str:
        sources, problems = report.image_sources(report.report_images(full), report_config)
        for problem in problems:
            get_run_logger().warning("report artifact: %s", problem)
        return report.render_report_markdown(full, sources.get)

    publish_markdown("report", layout.artifact_key("report", root), render, uris["markdown"])
    # 3. the shard table and the per-class IoU table
    shard_rows = [
        {"domain": d, "shard": name, "status": status}
        for d, s in results.get("transfer", {}).items()
        for status in ("computed", "cached", "failed")
        for name in s[f"shards_{status}"]  # shards_failed: {name: why}
    ]
    publish_table("shards", shard_rows, root, "transfer shard status")
    publish_table(
        "per-class",
        report.per_class_rows(evaluations),
        root,
        "IoU (%) per class of every model (columns: model / target)",
    )
    return {**full, "uris": uris}
