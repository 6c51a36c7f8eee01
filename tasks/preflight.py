"""Preflight task: every problem that would stop a pipeline run, before any heavy work."""

from __future__ import annotations

from prefect import task

from zodi_core.config import PipelineConfig
from zodi_core.preflight import check_pipeline


@task(task_run_name="preflight")
def check_pipeline_task(config: PipelineConfig) -> None:
    """Raise :class:`zodi_core.preflight.PreflightError` listing every problem found."""
    check_pipeline(config)
