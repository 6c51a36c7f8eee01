"""Report tasks: sample grids and the final report (storage + Prefect artifacts)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks._policy import retry_on_io
from tasks.artifacts import publish, publish_table
from zodi_core import layout, report
from zodi_core.config import ReportConfig


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def render_sample_grid_task(paired_uri: str, root: str, domain: str) -> str:
    """Render a source | condition | generated grid of a domain's first pairs; return its URI."""
    return report.render_sample_grid(paired_uri, layout.sample_grid_uri(root, domain))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def write_report_task(
    results: dict[str, Any], root: str, report_config: ReportConfig | None = None
) -> dict[str, Any]:
    """Write report.json/report.md to storage and publish them as Prefect artifacts, keyed per
    experiment: the report (sample grids and confusion matrices shown as images, see
    :class:`ReportConfig`), the shard table and the per-class IoU table.

    An artifact that cannot be published logs a warning; the report in storage is what counts.
    """
    # 1. per-class IoU and confusion matrices of every evaluation go into the report
    evaluations = report.read_evaluations(results.get("results", {}))
    full = {**results, "evaluations": evaluations}
    uris = report.write_report(full, root)
    # 2. the report artifact, with images the browser can load (presigned or embedded)
    publish("report", _publish_report, full, root, report_config, uris["markdown"])
    # 3. the shard table and the per-class IoU table
    shard_rows = [
        {"domain": d, "shard": name, "status": status}
        for d, s in results.get("transfer", {}).items()
        for status, names in (
            ("computed", s["shards_computed"]),
            ("cached", s["shards_cached"]),
            ("failed", list(s["shards_failed"])),
        )
        for name in names
    ]
    publish_table("shards", shard_rows, root, "transfer shard status")
    publish_table(
        "per-class",
        report.per_class_rows(evaluations),
        root,
        "IoU (%) per class of every model (columns: model / target)",
    )
    return {**full, "uris": uris}


def _publish_report(
    full: dict[str, Any], root: str, config: ReportConfig | None, description: str
) -> Any:
    sources, problems = report.image_sources(report.report_images(full), config)
    for problem in problems:
        get_run_logger().warning("report artifact: %s", problem)
    return create_markdown_artifact(
        markdown=report.render_report_markdown(full, sources.get),
        key=layout.artifact_key("report", root),
        description=description,
    )
