"""Ingestion task: a dataset folder → a samples manifest."""

from __future__ import annotations

from prefect import task

from tasks._policy import IO_RETRIES
from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import ingest_dataset


# Not cached: ingestion is the step that notices a changed or corrupted file on disk.
@task(**IO_RETRIES)
def ingest_dataset_task(spec: DatasetSpec, out_uri: str, skip_invalid: bool = False) -> str:
    """Ingest one dataset; return the samples manifest URI."""
    return ingest_dataset(spec, out_uri, skip_invalid=skip_invalid, progress=False).manifest_uri
