"""The transfer path's footprint: a local transfer runs where mmseg, mmcv, mmengine, prefect and
boto3 are not installed (a GPU worker with torch + diffusers only), and writes what it should."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import ingest_dataset
from zodi_core.manifest import read_manifest

#: What a GPU worker image typically lacks (mmcv's CUDA ops are the hardest build of the stack).
BLOCKED = ("mmseg", "mmcv", "mmengine", "prefect", "boto3", "botocore", "s3transfer")
#: Their distributions' folder names in site-packages (modules and ``*.dist-info``).
_BLOCKED_PREFIXES = (*BLOCKED, "mmsegmentation", "prefect_", "mypy_boto3")

#: The child process: checks the packages really are absent, then runs a local transfer.
CHILD = textwrap.dedent(
    """
    import json, sys
    from importlib.util import find_spec

    BLOCKED = sys.argv[5].split(",")
    present = [name for name in BLOCKED if find_spec(name) is not None]
    if present:  # the test would prove nothing
        raise SystemExit(f"not removed from the child's view: {present}")

    import numpy as np

    from zodi_core.conditions import render_condition
    from zodi_core.config import TransferConfig
    from zodi_core.transfer.runner import transfer_manifest

    samples, models, out, palette = sys.argv[1:5]
    config = TransferConfig.preset(
        "demo", num_inference_steps=2, batch_size=2, palette=palette,
        models={"base": models, "controlnet": None},
    )
    result = transfer_manifest(samples, config, out, progress=False)
    other = render_condition(np.zeros((2, 2), np.uint8), "cityscapes")  # the other palette
    print(json.dumps({"summary": result.summary(), "cityscapes_road": other[0, 0].tolist()}))
    """
)


def _site_without_blocked(dst: Path) -> Path:
    """A view of this environment's site-packages without the blocked packages: a folder of
    symlinks to every other entry (the child runs with ``-S``, on it and the repository only),
    so to the child they are not installed at all (``find_spec`` is None, as on a GPU worker)."""
    dst.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.suffix == ".pth" or entry.name.lower().startswith(_BLOCKED_PREFIXES):
            continue
        (dst / entry.name).symlink_to(entry)
    return dst


@pytest.fixture(scope="module")
def samples_manifest(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("footprint") / "cityscapes-val.parquet"
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="val")
    ingest_dataset(spec, str(out), progress=False)
    return str(out)


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers: ~25 s on 2 busy cores
def test_transfer_runs_without_mmseg_mmcv_mmengine_prefect_boto3(
    samples_manifest, tiny_models_dir, tmp_path
):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    site = _site_without_blocked(tmp_path / "site")
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    argv = [samples_manifest, str(tiny_models_dir), str(out), "ade20k", ",".join(BLOCKED)]
    proc = subprocess.run(
        [sys.executable, "-S", str(script), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{site}{os.pathsep}{repo}"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cityscapes_road"] == [128, 64, 128]  # train id 0, road

    n = read_manifest(samples_manifest, "samples").num_rows
    summary = report["summary"]
    assert (summary["written"], summary["skipped"], summary["failed"]) == (n, 0, 0)
    rows = read_manifest(summary["manifest"], "transfer").to_pylist()
    assert len(rows) == n and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        data = Path(row["generated_uri"]).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert row["image_bytes"] == len(data)
        assert row["image_sha256"] == hashlib.sha256(data).hexdigest()
