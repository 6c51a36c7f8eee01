"""Tiny diffusion models for the transfer tests, written once per session; GPU marker handling."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests when no CUDA device exists (reported as skipped by -ra)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SD 1.5 + ControlNet pipeline in diffusers' folder format
    (``controlnet/`` inside), as ``zodi tiny-models`` writes it. Read-only for tests."""
    from zodi_core.transfer.models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny-models"), seed=0)


@pytest.fixture(scope="session")
def tiny_components(tiny_models_dir: Path):
    """The tiny models loaded once on CPU through :func:`load_components` (the real-weights path).

    Shared: tests must not modify the modules (wrap them instead).
    """
    from zodi_core.config import ModelsConfig
    from zodi_core.transfer.models import load_components

    return load_components(ModelsConfig(base=str(tiny_models_dir), controlnet=None), "cpu")


def tiny_transfer_config(models_dir: Path, **overrides):
    """The demo preset on the tiny models, 2 steps, batch 2: what the transfer tests run."""
    from zodi_core.config import TransferConfig

    settings = {
        "num_inference_steps": 2,
        "batch_size": 2,
        "models": {"base": str(models_dir), "controlnet": None},
        **overrides,
    }
    return TransferConfig.preset("demo", **settings)
