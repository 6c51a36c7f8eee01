"""Report tasks: sample grids and the final report (storage + Prefect artifacts)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks._policy import retry_on_io
from zodi_core import layout, report


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def render_sample_grid_task(paired_uri: str, root: str, domain: str) -> str:
    """Render a source | condition | generated grid of a domain's first pairs; return its URI."""
    return report.render_sample_grid(paired_uri, layout.sample_grid_uri(root, domain))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def write_report_task(results: dict[str, Any], root: str) -> dict[str, Any]:
    """Write report.json/report.md to storage and publish them as Prefect artifacts."""
    uris = report.write_report(results, root)
    create_markdown_artifact(
        markdown=report.render_report_markdown(results),
        key=layout.artifact_key("report", root),
        description=uris["markdown"],
    )
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
    if shard_rows:
        create_table_artifact(
            table=shard_rows,
            key=layout.artifact_key("shards", root),
            description="transfer shard status",
        )
    return {**results, "uris": uris}
