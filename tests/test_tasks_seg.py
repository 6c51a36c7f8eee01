"""The training and evaluation tasks' own logic, through ``task.fn()``: cache keys and the
arguments a planned run becomes (no Prefect run, no training)."""

from __future__ import annotations

from tasks import evaluate as evaluate_tasks
from tasks import train as train_tasks
from zodi_core import layout
from zodi_core.config import EvalConfig, TrainConfig
from zodi_core.runs import EvaluationJob, TrainingRun

DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"


def _key(run: TrainingRun, train: TrainConfig, source: str, root: str = "/r") -> str:
    work_dir = layout.train_work_dir(root, run.name, run.seed)
    params = {"run": run, "source_uri": source, "work_dir": work_dir, "train": train}
    return train_tasks._train_cache_key(None, params)


def test_train_cache_key_covers_run_settings_and_manifest_content(tmp_path):
    source = tmp_path / "samples.parquet"
    source.write_bytes(b"v1")
    train = TrainConfig.preset("demo")
    run = TrainingRun("zodi-night", "night", DEMO, 0, None)
    key = _key(run, train, str(source))
    assert key == _key(run, train, str(source))  # stable
    others = [
        _key(TrainingRun("zodi-night", "night", DEMO, 1, None), train, str(source)),
        _key(TrainingRun("source-only", None, DEMO, 0, None), train, str(source)),
        _key(run, train.replace(lambda_sim=0.2), str(source)),
        _key(run, train, str(source), root="/other"),
    ]
    assert len({key, *others}) == 5
    source.write_bytes(b"v2")  # same URI, new content: a new model
    assert _key(run, train, str(source)) != key


def test_train_task_trains_the_planned_run_resuming_automatically(monkeypatch):
    calls = {}

    def fake_train_model(mmseg_config, paired, work_dir, **kwargs):
        calls.update(mmseg_config=mmseg_config, paired=paired, work_dir=work_dir, **kwargs)
        return {"checkpoint": f"{work_dir}/iter_1.pth"}

    monkeypatch.setattr(train_tasks, "train_model", fake_train_model)
    run = TrainingRun("source-only", None, DEMO, 2, None)
    out = train_tasks.train_model_task.fn(
        run, "/s.parquet", "/r/train/source-only/seed2", TrainConfig()
    )
    assert out == {"name": "source-only", "domain": None, "seed": 2,
                   "checkpoint": "/r/train/source-only/seed2/iter_1.pth"}  # fmt: skip
    assert calls["source_only"] and calls["resume"] == "auto" and calls["seed"] == 2
    assert calls["source_manifest_uri"] == "/s.parquet" and calls["mmseg_config"] == DEMO


def test_evaluate_task_passes_the_job_and_keys_on_its_content(tmp_path, monkeypatch):
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"w1")
    proxy = tmp_path / "p.parquet"
    proxy.write_bytes(b"p")
    job = EvaluationJob("zodi-night", (str(ckpt),), DEMO, (), str(proxy), "night", "zodi-night")
    params = {"job": job, "out": "/o", "evaluation": EvalConfig()}
    key = evaluate_tasks._eval_cache_key(None, params)
    ckpt.write_bytes(b"w2")
    assert evaluate_tasks._eval_cache_key(None, params) != key
    seen = {}
    monkeypatch.setattr(
        evaluate_tasks, "evaluate_checkpoint", lambda *a, **k: seen.update(args=a, kwargs=k) or {}
    )
    assert evaluate_tasks.evaluate_checkpoint_task.fn(job, "/o", EvalConfig()) == {
        "name": "zodi-night"
    }
    assert seen["args"] == ([str(ckpt)], DEMO, [], "/o")
    assert seen["kwargs"]["proxy_manifest"] == str(proxy)
