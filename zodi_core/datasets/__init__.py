"""Datasets: the synthetic generator, readers of the real layouts, ingestion into manifests.

- :mod:`~zodi_core.datasets.synth`: procedural street scenes with exact labels (``write_synthetic``).
- :mod:`~zodi_core.datasets.readers`: list and pair Cityscapes, ACDC and GTA5 files by id.
- :mod:`~zodi_core.datasets.ingest`: decode, check and write a ``samples`` manifest
  (``ingest_dataset``).
- :mod:`~zodi_core.datasets.io`: read images and labels referenced by manifests.
"""
