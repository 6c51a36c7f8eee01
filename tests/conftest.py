"""Shared test set-up. Fixtures live in one module per area (fixtures_*.py beside this file)."""

import os

# Settings read by libraries at import: keep everything offline and quiet in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "fixtures_data",
    "fixtures_ceph",
    "fixtures_models",
    "fixtures_prefect",
]
