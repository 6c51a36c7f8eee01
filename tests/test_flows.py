"""Prefect flows on synthetic data and tiny models, under one session-scoped test harness."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_models import tiny_transfer_config

from zodi_core.config import DatasetSpec

pytestmark = pytest.mark.slow


def _ingest(root: Path, out: Path) -> str:
    from flows.ingest import ingest_flow

    spec = DatasetSpec(dataset="cityscapes", root=str(root / "cityscapes"), split="train")
    return ingest_flow([spec], str(out))[spec.manifest_name]


def _latest_artifact(key: str):
    """The newest version of the Prefect artifact ``key`` (filtered on the server by key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
    )

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
        )
    return artifact


def _paired_rows(uri: str) -> list[dict]:
    rows = pq.read_table(uri).to_pylist()
    keep = ("sample_id", "domain", "generated_uri", "config_digest", "seed", "k")
    return [{k: r[k] for k in keep} for r in rows]


def test_transfer_flow_failed_shard_rerun_computes_only_that_shard(
    prefect_harness, synthetic_copy, tiny_models_dir, tmp_path
):
    from flows.transfer import transfer_flow

    out = tmp_path / "artifacts"
    samples_uri = _ingest(synthetic_copy, out)
    config = tiny_transfer_config(tiny_models_dir)

    # A real fault after ingestion: one source image is truncated on disk.
    victim = sorted((synthetic_copy / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))[5]
    good_bytes = victim.read_bytes()
    victim.write_bytes(good_bytes[: len(good_bytes) // 3])

    state = transfer_flow(samples_uri, ["night"], str(out), config, shard_size=2, return_state=True)
    assert state.is_failed()
    summary = state.result(raise_on_failure=False)["domains"]["night"]
    assert list(summary["shards_failed"]) == ["shard-00002"]  # 8 images, shards of 2: index 5 → 2
    assert victim.name.removesuffix("_leftImg8bit.png") in summary["shards_failed"]["shard-00002"]
    assert "shard-00002" in state.message
    assert len(summary["shards_computed"]) == 3
    assert summary["images_written"] == 7 and summary["images_failed"] == 1
    assert not (out / "paired").exists()  # nothing merged from a failed run

    # Repair: the rerun recomputes the failed shard only; inside it, the good image is skipped.
    victim.write_bytes(good_bytes)
    state = transfer_flow(samples_uri, ["night"], str(out), config, shard_size=2, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    summary = result["domains"]["night"]
    assert summary["shards_computed"] == ["shard-00002"]
    assert sorted(summary["shards_cached"]) == ["shard-00000", "shard-00001", "shard-00003"]
    assert summary["images_written"] == 1 and summary["shards_failed"] == {}

    # The final paired manifest equals a clean run's (same ids, digests, seeds, paths).
    clean_out = tmp_path / "clean"
    clean = transfer_flow(samples_uri, ["night"], str(clean_out), config, shard_size=2)
    repaired_rows = _paired_rows(result["paired"]["night"])
    clean_rows = _paired_rows(clean["paired"]["night"])
    assert len(repaired_rows) == 8
    for a, b in zip(repaired_rows, clean_rows, strict=True):
        assert a["generated_uri"].replace(str(out), "") == b["generated_uri"].replace(
            str(clean_out), ""
        )
        assert {k: v for k, v in a.items() if k != "generated_uri"} == {
            k: v for k, v in b.items() if k != "generated_uri"
        }
    assert "domain=night" in result["paired"]["night"]


@pytest.mark.ceph
def test_transfer_flow_on_s3_results_and_artifacts_in_ceph(
    prefect_harness, synthetic_root, tiny_models_dir, s3_root, ceph_s3, monkeypatch, tmp_path
):
    import boto3

    from deployments.blocks import save_s3_result_storage
    from flows.transfer import transfer_flow

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", ceph_s3.endpoint_url)
    samples_uri = _ingest(synthetic_root, tmp_path / "manifests")
    block = save_s3_result_storage(
        "zodi-test-results", f"{s3_root}/prefect-results", endpoint_url=ceph_s3.endpoint_url
    )
    flow = transfer_flow.with_options(result_storage=block)
    config = tiny_transfer_config(tiny_models_dir)

    first = flow(samples_uri, ["night"], s3_root, config, shard_size=4)
    assert first["domains"]["night"]["images_written"] == 8
    second = flow(samples_uri, ["night"], s3_root, config, shard_size=4)
    assert sorted(second["domains"]["night"]["shards_cached"]) == ["shard-00000", "shard-00001"]
    assert second["domains"]["night"]["images_written"] == 0

    # Images, shard manifests, the paired manifest and Prefect's results all live in Ceph.
    bucket, _, prefix = s3_root.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=ceph_s3.endpoint_url)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    rel = [k.removeprefix(prefix + "/") for k in keys]
    assert sum(k.startswith("images/night/") for k in rel) == 8
    assert sum(k.startswith("transfer/night/shards/") for k in rel) == 2
    assert "paired/domain=night/paired.parquet" in rel
    assert sum(k.startswith("prefect-results/") for k in rel) >= 2  # one result per shard
    assert second["paired"]["night"].startswith("s3://")


def test_transfer_killed_mid_shard_leaves_no_partial_image_or_orphan_row(
    synthetic_root, tiny_models_dir, tmp_path
):
    """SIGKILL a transfer mid-shard: every visible image is complete, no manifest row lacks its
    image, and the rerun skips what was written and finishes the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    from zodi_core import manifest

    out = tmp_path / "out"
    samples_uri = _ingest_local(synthetic_root, tmp_path)
    manifest_uri = str(out / "paired" / "domain=night" / "paired.parquet")
    cmd = [
        sys.executable, "-m", "zodi_cli", "transfer", "--manifest", samples_uri,
        "--domain", "night", "--preset", "demo", "--steps", "8", "--batch-size", "1",
        "--models", str(tiny_models_dir), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    images = out / "images" / "night"  # then <generation digest>/<sample_id>.png
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if images.is_dir() and any(images.rglob("*.png")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "transfer finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    visible = sorted(images.rglob("*.png"))
    assert 1 <= len(visible) < 8
    for p in visible:
        with Image.open(p) as im:
            im.load()  # a half-written PNG would raise here
    assert not Path(manifest_uri).exists()  # no manifest row without its image

    rerun = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    table = manifest.read_manifest(manifest_uri, "transfer")
    statuses = table.column("status").to_pylist()
    assert statuses.count("skipped") == len(visible) and statuses.count("ok") == 8 - len(visible)
    for uri in table.column("generated_uri").to_pylist():
        assert os.path.exists(uri)


def _ingest_local(root: Path, tmp_path: Path) -> str:
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(dataset="cityscapes", root=str(root / "cityscapes"), split="train")
    return ingest_dataset(spec, str(tmp_path / "samples.parquet"), progress=False).manifest_uri


def test_pipeline_flow_end_to_end_reports_and_artifacts(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    import asyncio
    import json

    from flows.pipeline import pipeline_flow
    from zodi_cli._common import demo_config

    data = {k: str(synthetic_root / k) for k in ("cityscapes", "acdc", "gta5")}
    config = demo_config(tmp_path, data, tiny_models_dir, ["night"])
    config = config.replace(transfer=config.transfer.replace(num_inference_steps=2))
    report = pipeline_flow(config)

    root = Path(config.storage.root)
    saved = json.loads((root / "report.json").read_text())
    assert set(saved["results"]) == {"source-only", "zodi-night"}
    for model in ("source-only", "zodi-night"):
        res = saved["results"][model]
        assert 0.0 <= res["targets"]["acdc-night-val"]["mIoU"] <= 100.0
        assert res["proxy"]["night"]["real_mIoU"] == res["targets"]["acdc-night-val"]["mIoU"]
    assert saved["transfer"]["night"]["images_written"] == 8
    assert (root / "grids" / "night.png").is_file()
    md = (root / "report.md").read_text()
    assert "| zodi-night |" in md and "Proxy estimate" in md
    assert report["uris"]["markdown"] == str(root / "report.md")
    assert (root / "paired" / "domain=night" / "paired.parquet").is_file()

    from prefect.client.orchestration import get_client

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    keys = {a.key for a in asyncio.run(artifacts())}
    from zodi_core.layout import artifact_key

    root_uri = config.storage.root  # keyed per experiment: another root never overwrites them
    assert {artifact_key("report", root_uri), artifact_key("shards", root_uri)} <= keys

    # The UI shows the images: the grid, one confusion matrix per model and target and the
    # quality section's histograms and worst-N grid embedded (a local root), within the artifact
    # budget; a per-class IoU table; transfer progress 100 %.
    import base64
    import io
    import re

    from PIL import Image

    markdown = _latest_artifact(artifact_key("report", root_uri)).data
    images = dict(re.findall(r"!\[([^\]]*)\]\(data:image/(?:png|jpeg);base64,([^)]+)\)", markdown))
    assert set(images) == {"night", "score histograms", "worst generations, night"} | {
        f"{m} · {t}"
        for m in ("source-only", "zodi-night")
        for t in ("acdc-night-val", "proxy-night")
    }
    for data in images.values():
        Image.open(io.BytesIO(base64.b64decode(data))).load()
    assert len(markdown) <= config.report.embed_max_kb * 1000 + 10_000
    table = _latest_artifact(artifact_key("per-class", root_uri)).data
    rows = json.loads(table) if isinstance(table, str) else table
    assert len(rows) == 20 and rows[0]["class"] == "road"
    zodi_miou = saved["results"]["zodi-night"]["targets"]["acdc-night-val"]["mIoU"]
    assert rows[-1]["zodi-night / acdc-night-val"] == zodi_miou
    assert _latest_artifact(artifact_key("progress-night", root_uri)).data == 100.0


def test_transfer_flow_runs_shards_on_dask_worker_processes(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    """The multi-GPU layout (one single-threaded Dask worker per device), on CPU processes: the
    same flow code, and the same images as the thread pool gives."""
    from prefect_dask import DaskTaskRunner

    from flows.transfer import transfer_flow

    samples_uri = _ingest(synthetic_root, tmp_path / "m")
    config = tiny_transfer_config(tiny_models_dir)
    runner = DaskTaskRunner(
        cluster_kwargs={
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
        }
    )
    on_dask = transfer_flow.with_options(task_runner=runner)(
        samples_uri, ["night"], str(tmp_path / "dask"), config, shard_size=4
    )
    on_threads = transfer_flow(
        samples_uri, ["night"], str(tmp_path / "threads"), config, shard_size=4
    )
    assert on_dask["domains"]["night"]["images_written"] == 8
    assert len(on_dask["domains"]["night"]["shards_computed"]) == 2
    # Progress follows Dask futures too (prefect's as_completed): it ends at 100 %.
    from zodi_core.layout import artifact_key

    progress_key = artifact_key("progress-night", str(tmp_path / "dask"))
    assert _latest_artifact(progress_key).data == 100.0
    a, b = _paired_rows(on_dask["paired"]["night"]), _paired_rows(on_threads["paired"]["night"])
    import numpy as np

    from zodi_core.datasets.io import read_image

    for x, y in zip(a, b, strict=True):
        assert x["sample_id"] == y["sample_id"] and x["seed"] == y["seed"]
        px, py = read_image(x["generated_uri"]), read_image(y["generated_uri"])
        # Other processes, other thread counts: float sums may differ in the last bit.
        assert np.abs(px.astype(int) - py.astype(int)).max() <= 1


@pytest.mark.ceph
def test_pipeline_flow_with_all_artifacts_in_ceph(
    prefect_harness, synthetic_root, tiny_models_dir, s3_root, ceph_s3, monkeypatch, tmp_path
):
    """storage.root on S3: manifests, images, checkpoints, evaluation and the report all land in
    the bucket; the endpoint comes from the config (StorageConfig.endpoint_url)."""
    import json

    from flows.pipeline import pipeline_flow
    from zodi_cli._common import demo_config
    from zodi_core import storage

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    data = {k: str(synthetic_root / k) for k in ("cityscapes", "acdc", "gta5")}
    config = demo_config(tmp_path, data, tiny_models_dir, ["night"])
    config = config.replace(
        transfer=config.transfer.replace(num_inference_steps=2),
        storage={"root": s3_root, "endpoint_url": ceph_s3.endpoint_url},
    )
    report = pipeline_flow(config)

    assert report["uris"]["json"] == f"{s3_root}/report.json"
    saved = json.loads(storage.read_bytes(report["uris"]["json"]))
    assert set(saved["results"]) == {"source-only", "zodi-night"}
    keys = set(storage.open_storage(s3_root).list())
    assert "paired/domain=night/paired.parquet" in keys
    assert "grids/night.png" in keys and "report.md" in keys
    assert any(k.startswith("train/zodi-night/seed0/") and k.endswith(".pth") for k in keys)
    assert any(k.startswith("eval/zodi-night/confusion_") for k in keys)
    assert sum(k.startswith("images/night/") for k in keys) == 8

    # The report artifact links the grid and the confusion matrices by presigned URLs that a
    # browser can GET without credentials (no image bytes in Prefect's database).
    import re
    import urllib.request

    from zodi_core.layout import artifact_key

    markdown = _latest_artifact(artifact_key("report", s3_root)).data
    links = dict(re.findall(r"!\[([^\]]*)\]\((https?://[^)\s]+)\)", markdown))
    # the grid, 2 models x 2 targets, the quality histograms and worst-N grid
    assert len(links) == 7 and "data:image" not in markdown
    with urllib.request.urlopen(links["night"], timeout=10) as response:
        grid = storage.read_bytes(f"{s3_root}/grids/night.png", endpoint_url=ceph_s3.endpoint_url)
        assert response.read() == grid


def test_pipeline_flow_preflight_fails_first_with_every_problem(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    """A deployed run (no CLI in front) checks everything at step 0, before any ingestion."""
    from flows.pipeline import pipeline_flow
    from zodi_cli._common import demo_config
    from zodi_core.preflight import PreflightError

    data = {k: str(synthetic_root / k) for k in ("cityscapes", "acdc", "gta5")}
    data["cityscapes"] = str(tmp_path / "no-cityscapes-here")
    config = demo_config(tmp_path / "work", data, tmp_path / "no-models-here", ["night"])
    with pytest.raises(PreflightError) as err:
        pipeline_flow(config)
    message = str(err.value)
    assert "no-cityscapes-here" in message and "no-models-here" in message
    assert not (tmp_path / "work" / "artifacts" / "manifests").exists()  # nothing ingested
