"""ingest_flow: dataset folders → samples manifests (source train, source val, targets)."""

from __future__ import annotations

from prefect import flow

from tasks.ingest import ingest_dataset_task
from zodi_core import layout
from zodi_core.config import DatasetSpec


@flow(name="ingest_flow")
def ingest_flow(
    datasets: list[DatasetSpec], out_root: str, skip_invalid: bool = False
) -> dict[str, str]:
    """Ingest each dataset into ``<out_root>/manifests/<manifest_name>.parquet``; return name → URI."""
    # 1. ingest every dataset in parallel
    futures = {
        spec.manifest_name: ingest_dataset_task.submit(
            spec, layout.samples_manifest_uri(out_root, spec.manifest_name), skip_invalid
        )
        for spec in datasets
    }
    # 2. wait; a failed ingest fails the flow with its reasons
    return {label: fut.result() for label, fut in futures.items()}
