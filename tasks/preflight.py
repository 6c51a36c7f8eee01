"""Preflight task: every problem that would stop a pipeline run, before any heavy work."""

from __future__ import annotations

from prefect import task

from zodi_core.preflight import check_pipeline

#: Raises :class:`zodi_core.preflight.PreflightError` listing every problem found.
check_pipeline_task = task(check_pipeline, name="check_pipeline_task", task_run_name="preflight")
