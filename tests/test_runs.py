"""zodi_core.runs: training-run planning and naming, evaluation planning and collection."""

from __future__ import annotations

from zodi_core import layout, runs
from zodi_core.config import TrainConfig
from zodi_core.report import render_report_markdown


def test_plan_training_runs_is_the_baseline_and_one_zodi_model_per_domain_for_every_seed():
    train = TrainConfig(mmseg_config="m.py", seeds=(0, 1))
    planned = runs.plan_training_runs(train, {"night": "/p/n.parquet", "fog": "/p/f.parquet"})
    assert [(r.name, r.seed) for r in planned] == [
        ("source-only", 0), ("source-only", 1), ("zodi-fog", 0), ("zodi-fog", 1),
        ("zodi-night", 0), ("zodi-night", 1),
    ]  # fmt: skip
    baseline, fog = planned[0], planned[2]
    assert baseline.source_only and baseline.paired_manifest is None and baseline.domain is None
    assert not fog.source_only and fog.domain == "fog" and fog.paired_manifest == "/p/f.parquet"
    assert {r.mmseg_config for r in planned} == {"m.py"}  # one model config for every run
    assert (
        layout.train_work_dir("s3://b/root", fog.name, fog.seed)
        == "s3://b/root/train/zodi-fog/seed0"
    )


def test_run_name_is_source_only_or_zodi_domain():
    assert runs.run_name(None) == "source-only"
    assert runs.run_name("night") == "zodi-night"


def _result(checkpoint: str, seed: int, domain: str | None) -> dict:
    return {"checkpoint": checkpoint, "seed": seed, "domain": domain, "mmseg_config": "m.py"}


def test_plan_evaluations_and_collect_put_proxy_beside_real_target():
    models = {
        "source-only": [_result("/so/1.pth", 1, None), _result("/so/0.pth", 0, None)],
        "zodi-night": [_result("/z/0.pth", 0, "night")],
    }
    jobs = runs.plan_evaluations(
        models, ["/t/acdc-night.parquet"], {"night": "/p/night.parquet", "fog": "/p/fog.parquet"}
    )
    by_slug = {j.slug: j for j in jobs}
    assert set(by_slug) == {"source-only", "source-only-proxy-night", "zodi-night"}
    assert by_slug["source-only"].checkpoints == ("/so/0.pth", "/so/1.pth")
    assert by_slug["source-only"].proxy_domain == "fog" and by_slug["source-only"].manifests
    assert by_slug["source-only-proxy-night"].manifests == ()
    assert by_slug["zodi-night"].proxy == "/p/night.parquet"
    assert by_slug["zodi-night"].mmseg_config == "m.py"
    results = [
        {"report_md": "r1", "targets": {"acdc-night-val": 20.0, "proxy-fog": 30.0}},
        {"report_md": "r2", "targets": {"proxy-night": 18.0}},
        {"report_md": "r3", "targets": {"acdc-night-val": 25.0, "proxy-night": 24.0}},
    ]
    ordered = [by_slug["source-only"], by_slug["source-only-proxy-night"], by_slug["zodi-night"]]
    collected = runs.collect_evaluations(ordered, results)
    assert collected["zodi-night"]["proxy"]["night"] == {"mIoU": 24.0, "real_mIoU": 25.0}
    assert collected["source-only"]["proxy"]["fog"]["real_mIoU"] is None
    assert collected["source-only"]["proxy"]["night"]["real_mIoU"] == 20.0
    md = render_report_markdown({"results": collected})
    assert "| zodi-night | 25.0 |" in md and "| zodi-night | night | 24.0 | 25.0 |" in md


def test_plan_evaluations_drops_jobs_with_nothing_to_evaluate():
    models = {"zodi-snow": [_result("/z/0.pth", 0, "snow")]}
    assert runs.plan_evaluations(models, [], {"night": "/p/night.parquet"}) == []
