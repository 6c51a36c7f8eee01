"""Reruns you can trust: storage is the truth, not the cache (issue 9).

Settings A → B → A on one root, deleted outputs, concurrent identical runs and a failing
transfer, each through the real flows on synthetic data and tiny models.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_models import tiny_transfer_config

from zodi_core.config import DatasetSpec

pytestmark = pytest.mark.slow


def _samples(synthetic_root: Path, tmp_path: Path) -> str:
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="train")
    return ingest_dataset(spec, str(tmp_path / "samples.parquet"), progress=False).manifest_uri


def _png_digest(path: str) -> str:
    from zodi_core.transfer.runner import read_png_metadata

    meta = read_png_metadata(Path(path).read_bytes())
    assert meta is not None, f"{path}: no ZoDi metadata"
    return meta["config_digest"]


def test_settings_a_b_a_every_row_points_at_images_made_with_its_settings(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    from flows.transfer import transfer_flow

    samples = _samples(synthetic_root, tmp_path)
    out = str(tmp_path / "artifacts")
    a, b = (
        tiny_transfer_config(tiny_models_dir, strength=0.9),
        tiny_transfer_config(tiny_models_dir, strength=0.5),
    )

    first = transfer_flow(samples, ["night"], out, a, shard_size=4)
    a_rows = pq.read_table(first["paired"]["night"]).to_pylist()
    second = transfer_flow(samples, ["night"], out, b, shard_size=4)
    assert second["domains"]["night"]["images_written"] == 8  # B never reuses A's images
    b_rows = pq.read_table(second["paired"]["night"]).to_pylist()
    third = transfer_flow(samples, ["night"], out, a, shard_size=4)
    summary = third["domains"]["night"]
    assert sorted(summary["shards_cached"]) == ["shard-00000", "shard-00001"]
    assert summary["images_written"] == 0

    rows = pq.read_table(third["paired"]["night"]).to_pylist()
    assert len(rows) == 8
    for row in rows:
        assert row["strength"] == pytest.approx(0.9)
        assert _png_digest(row["generated_uri"]) == row["config_digest"]
        assert row["config_digest"] in row["generated_uri"]  # content-addressed key
    assert [r["generated_uri"] for r in rows] == [r["generated_uri"] for r in a_rows]
    assert {r["config_digest"] for r in b_rows}.isdisjoint({r["config_digest"] for r in rows})
    for row in b_rows:  # B's images are still there, untouched by the third run
        assert _png_digest(row["generated_uri"]) == row["config_digest"]


def test_deleted_outputs_are_recomputed_exactly(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    from flows.transfer import transfer_flow

    samples = _samples(synthetic_root, tmp_path)
    out = tmp_path / "artifacts"
    config = tiny_transfer_config(tiny_models_dir)
    first = transfer_flow(samples, ["night"], str(out), config, shard_size=4)
    rows = pq.read_table(first["paired"]["night"]).to_pylist()

    # One image deleted: only its shard recomputes, and writes only that image.
    victim = rows[5]["generated_uri"]  # sorted ids, shards of 4: row 5 is in shard-00001
    os.remove(victim)
    state = transfer_flow(samples, ["night"], str(out), config, shard_size=4, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()["domains"]["night"]
    assert summary["shards_computed"] == ["shard-00001"]
    assert summary["shards_cached"] == ["shard-00000"]
    assert summary["images_written"] == 1
    assert os.path.exists(victim)

    # One shard manifest deleted: the shard reruns, skipping its images (all still there).
    shard_manifests = sorted((out / "transfer" / "night" / "shards").glob("shard-00000-*.parquet"))
    assert len(shard_manifests) == 1
    shard_manifests[0].unlink()
    summary = transfer_flow(samples, ["night"], str(out), config, shard_size=4)["domains"]["night"]
    assert summary["shards_computed"] == ["shard-00000"]
    assert summary["images_written"] == 0 and summary["images_skipped"] == 8
    assert shard_manifests[0].exists()

    # The whole storage root deleted: every shard recomputes; nothing to clear by hand.
    shutil.rmtree(out)
    result = transfer_flow(samples, ["night"], str(out), config, shard_size=4)
    summary = result["domains"]["night"]
    assert sorted(summary["shards_computed"]) == ["shard-00000", "shard-00001"]
    assert summary["images_written"] == 8
    for row in pq.read_table(result["paired"]["night"]).to_pylist():
        assert os.path.exists(row["generated_uri"])


def test_failing_transfer_shows_the_real_error(prefect_harness, tiny_models_dir, tmp_path):
    from prefect import flow

    from flows.pipeline import failed_transfer
    from flows.transfer import transfer_flow
    from zodi_core.manifest import ManifestError

    config = tiny_transfer_config(tiny_models_dir)
    missing = str(tmp_path / "no-such-manifest.parquet")

    @flow
    def parent():
        state = transfer_flow(missing, ["night"], str(tmp_path), config, return_state=True)
        if state.is_failed():
            return failed_transfer(state, "transfer")
        return state.result()

    with pytest.raises(ManifestError, match="no-such-manifest"):
        parent()


_CONCURRENT_RUN = textwrap.dedent(
    """
    import json, sys
    from flows.transfer import transfer_flow
    from zodi_core.config import TransferConfig
    samples, out, models = sys.argv[1:4]
    config = TransferConfig.preset(
        "demo", num_inference_steps=2, batch_size=2,
        models={"base": models, "controlnet": None},
    )
    result = transfer_flow(samples, ["night"], out, config, shard_size=4)
    print("RESULT " + json.dumps(result["domains"]["night"]))
    """
)


def test_two_concurrent_identical_runs_compute_each_shard_once(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    """Two processes, same root, same settings, started together: every shard is computed by
    exactly one of them; the other waits on the shard's lock and takes the cache hit."""
    from prefect.settings import PREFECT_API_URL

    samples = _samples(synthetic_root, tmp_path)
    out = str(tmp_path / "artifacts")
    env = {
        **os.environ,  # the harness's PREFECT_HOME and result storage: shared cache records
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the harness's server
        "OMP_NUM_THREADS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_RUN, samples, out, str(tiny_models_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(2)
    ]
    summaries = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=540)
        assert proc.returncode == 0, stderr[-3000:]
        line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
        summaries.append(json.loads(line.removeprefix("RESULT ")))
    computed = [s for summary in summaries for s in summary["shards_computed"]]
    cached = [s for summary in summaries for s in summary["shards_cached"]]
    assert sorted(computed) == ["shard-00000", "shard-00001"]  # each shard computed once
    assert sorted(cached) == ["shard-00000", "shard-00001"]
    assert sum(s["images_written"] for s in summaries) == 8
