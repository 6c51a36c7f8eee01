"""Synthetic datasets for every test: written once per session, copied when a test corrupts one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default synthetic set (seed 0): ``cityscapes/``, ``acdc/`` and ``gta5/`` under it.

    Shared by the whole session: treat it as read-only (use ``synthetic_copy`` to modify).
    """
    from zodi_core.datasets.synth import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, seed=0)
    return root


@pytest.fixture
def synthetic_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``synthetic_root`` that the test may corrupt."""
    dst = tmp_path / "synthetic"
    shutil.copytree(synthetic_root, dst)
    return dst
