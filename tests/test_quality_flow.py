"""Quality tasks under Prefect: cached scores (reused, recomputed when gone), and the pipeline
scoring every row and training ZoDi on the kept rows."""

from __future__ import annotations

import json
from pathlib import Path

from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)

from zodi_core.config import QualityConfig
from zodi_core.manifest import read_manifest
from zodi_core.quality import clip as qclip
from zodi_core.quality import scores


def test_score_task_is_cached_and_recomputed_when_its_file_is_gone(
    prefect_harness, tmp_path, monkeypatch
):
    from prefect import flow

    from tasks.quality import score_paired_cached

    data = write_dataset(tmp_path, n=2)
    clip_a = str(qclip.write_tiny_clip(tmp_path / "clip-a", seed=0))
    clip_b = str(qclip.write_tiny_clip(tmp_path / "clip-b", seed=1))
    calls = []
    real = scores.score_manifest

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(scores, "score_manifest", counting)
    root = str(tmp_path / "root")

    @flow
    def score(clip: str):
        return score_paired_cached(
            data["paired"], "night", root, None, None, QualityConfig(clip=clip)
        )

    first = score(clip_a)
    assert len(calls) == 1 and Path(first["uri"]).is_file()
    assert score(clip_a) == first and len(calls) == 1  # cache hit: nothing recomputed
    Path(first["uri"]).unlink()
    again = score(clip_a)  # the scores file is gone: recomputed, same content-addressed key
    assert len(calls) == 2 and again["uri"] == first["uri"] and Path(first["uri"]).is_file()
    other = score(clip_b)  # another scorer: other scores, other key
    assert len(calls) == 3 and other["uri"] != first["uri"]
    a = read_manifest(first["uri"]).column("clip_score").to_pylist()
    b = read_manifest(other["uri"]).column("clip_score").to_pylist()
    assert a != b


def test_pipeline_flow_scores_every_row_and_trains_zodi_on_the_kept(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    from flows.pipeline import pipeline_flow
    from zodi_cli._common import demo_config

    data = {k: str(synthetic_root / k) for k in ("cityscapes", "acdc", "gta5")}
    config = demo_config(tmp_path, data, tiny_models_dir, ["night"])
    clip = str(qclip.write_tiny_clip(tmp_path / "clip"))
    config = config.replace(
        transfer=config.transfer.replace(num_inference_steps=2),
        quality=config.quality.replace(clip=clip, drop_lowest_fraction=0.25, worst_n=2),
    )
    pipeline_flow(config)

    root = Path(config.storage.root)
    scored = read_manifest(str(root / "paired" / "domain=night" / "scored.parquet")).to_pylist()
    assert len(scored) == 8
    assert all(r[c] is not None for r in scored for c in scores.SCORE_COLUMNS)
    # floor(0.25 * 8) = 2 rows flagged (kept in the manifest), the 2 lowest layout scores
    lowest = sorted(scored, key=lambda r: (r["layout_miou"], r["sample_id"]))[:2]
    assert {r["sample_id"] for r in scored if not r["kept"]} == {r["sample_id"] for r in lowest}
    assert all(r["drop_reason"] == "lowest 0.25 layout" for r in lowest)
    train = read_manifest(str(root / "paired" / "domain=night" / "train.parquet"))
    assert train.num_rows == 6
    # the ZoDi model trained on the kept rows: its mmengine config names the training manifest
    dumped = [p.read_text() for p in (root / "train" / "zodi-night").rglob("*.py")]
    assert any("domain=night/train.parquet" in text for text in dumped)
    saved = json.loads((root / "report.json").read_text())
    night = saved["quality"]["domains"]["night"]
    assert (night["rows"], night["kept"], night["dropped"]) == (8, 6, 2)
    assert night["by_reason"] == {"lowest_fraction": 2}
    assert Path(night["worst_grid"]).is_file() and len(night["worst"]) == 2
    assert Path(saved["quality"]["histograms"]).is_file()
    md = (root / "report.md").read_text()
    assert "## Quality of the generated images" in md
    assert "| night | 8 | 6 | 2 | lowest_fraction: 2 |" in md

    import asyncio

    from prefect.client.orchestration import get_client

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    # Other tests' runs on the session's server also publish artifacts without a key (progress).
    keys = {a.key for a in asyncio.run(artifacts()) if a.key}
    assert any(k.startswith("zodi-quality-") for k in keys)  # keyed per experiment (root)


def test_two_concurrent_identical_scorings_compute_once(prefect_harness, tmp_path, monkeypatch):
    """Two flows score the same manifest with the same scorer at the same time: the score task
    runs under SERIALIZABLE isolation, so one computes and the other waits and takes the hit."""
    import threading
    import time

    from prefect import flow

    from tasks.quality import score_paired_cached

    data = write_dataset(tmp_path, n=2)
    clip = str(qclip.write_tiny_clip(tmp_path / "clip"))
    calls = []
    real = scores.score_manifest

    def slow(*args, **kwargs):
        calls.append(args[1])
        time.sleep(2)  # both flows are inside the task by now, unless one waits on the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(scores, "score_manifest", slow)
    root = str(tmp_path / "root")

    @flow
    def score():
        return score_paired_cached(
            data["paired"], "night", root, None, None, QualityConfig(clip=clip)
        )

    results = []
    threads = [threading.Thread(target=lambda: results.append(score())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 2 and results[0] == results[1]
    assert len(calls) == 1
