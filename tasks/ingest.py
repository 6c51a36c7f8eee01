"""Ingestion task: a dataset folder → a samples manifest."""

from __future__ import annotations

from prefect import task

from tasks._policy import retry_on_io
from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import ingest_dataset


# Not cached: ingestion is the step that notices a changed or corrupted file on disk.
@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def ingest_dataset_task(spec: DatasetSpec, out_uri: str, skip_invalid: bool = False) -> str:
    """Ingest one dataset; return the samples manifest URI."""
    result = ingest_dataset(spec, out_uri, skip_invalid=skip_invalid, progress=False)
    return result.manifest_uri
