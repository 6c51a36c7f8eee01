"""Preflight: every problem of a pipeline config reported at once, before any heavy work.

Local paths (synthetic data, tiny models, folders), the model hub (unreachable endpoint, offline
mode) and the real Ceph S3 gateway (missing bucket, wrong credentials, a good prefix).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import yaml

from zodi_cli import main
from zodi_cli._common import demo_config
from zodi_core.config import PipelineConfig, StorageConfig
from zodi_core.preflight import PreflightError, check_pipeline, check_storage, preflight


def _data(root: Path) -> dict[str, str]:
    return {name: str(root / name) for name in ("cityscapes", "acdc", "gta5")}


def _config(synthetic_root: Path, models: Path, storage: str, **changes) -> PipelineConfig:
    cfg = demo_config(Path("/unused"), _data(synthetic_root), models, ["night"])
    return cfg.model_copy(update={"storage": StorageConfig(root=storage), **changes})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_passes_on_the_demo_set_up_and_leaves_no_probe(
    synthetic_root, tiny_models_dir, tmp_path
):
    storage = tmp_path / "artifacts"
    cfg = _config(synthetic_root, tiny_models_dir, str(storage))
    t0 = time.perf_counter()
    assert preflight(cfg) == []
    assert time.perf_counter() - t0 < 5.0
    check_pipeline(cfg)  # no exception
    assert list(storage.iterdir()) == []  # the probe object was deleted


def test_preflight_reports_every_problem_at_once(synthetic_copy, tiny_models_dir, tmp_path):
    import shutil

    shutil.rmtree(synthetic_copy / "acdc" / "gt")  # the ACDC labels folder is gone
    broken_models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, broken_models)
    shutil.rmtree(broken_models / "vae")  # an incomplete diffusers folder
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # storage root below a file: not writable
    cfg = _config(synthetic_copy, broken_models, str(blocker / "artifacts"))
    source = cfg.source.model_copy(update={"root": str(tmp_path / "no-such-cityscapes")})
    cfg = cfg.model_copy(update={"source": source, "source_val": None})

    problems = preflight(cfg)
    assert len(problems) == 4, problems
    assert problems[0].startswith("source.root: dataset folder") and "does not exist" in problems[0]
    assert problems[1].startswith("targets[0].root: acdc layout folder")
    assert str(synthetic_copy / "acdc" / "gt" / "night" / "val") in problems[1]
    assert "transfer.models.base" in problems[2] and "vae/" in problems[2]
    assert problems[3].startswith(f"storage.root {str(blocker / 'artifacts')!r}")
    with pytest.raises(PreflightError) as exc:
        check_pipeline(cfg)
    assert exc.value.problems == problems
    assert str(exc.value).splitlines()[0] == "preflight: 4 problems to fix before running:"


def test_preflight_unreachable_hub_is_a_network_problem_in_seconds(
    synthetic_root, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session sets it
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = _config(synthetic_root, tmp_path, str(tmp_path / "out"))
    models = cfg.transfer.models.model_copy(
        update={"base": "someone/some-model", "controlnet": None}
    )
    cfg = cfg.model_copy(update={"transfer": cfg.transfer.model_copy(update={"models": models})})
    t0 = time.perf_counter()
    problems = preflight(cfg, network_timeout=2.0)
    assert time.perf_counter() - t0 < 5.0
    assert len(problems) == 1, problems
    assert problems[0].startswith("transfer.models.base: hub id 'someone/some-model' not cached")
    assert "a network problem" in problems[0] and "--local-dir" in problems[0]

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (offline,) = preflight(cfg, checks=("models",))
    assert "HF_HUB_OFFLINE is set" in offline


def test_cli_pipeline_preflight_lists_problems_then_one_error_line(
    synthetic_root, tmp_path, capsys
):
    cfg = _config(synthetic_root, tmp_path / "no-models", str(tmp_path / "out"))
    raw = cfg.model_dump(mode="json")
    raw["source"]["root"] = str(tmp_path / "missing")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["pipeline", "--config", str(path), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 3, err  # two problems, then the one error line
    assert err[0].strip().startswith("source.root: dataset folder")
    assert err[1].strip().startswith("transfer.models.base: model folder")
    assert err[2] == (
        "zodi pipeline: error: preflight: 2 problems to fix before running (listed above)"
    )
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["ok"] is False and out["exit_code"] == 2 and "preflight" in out["error"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.ceph
def test_preflight_on_ceph_s3_good_prefix_missing_bucket_and_wrong_keys(
    ceph_s3, s3_root, monkeypatch
):
    good = StorageConfig(root=s3_root, endpoint_url=ceph_s3.endpoint_url)
    assert check_storage(good) == []

    missing = StorageConfig(root="s3://zodi-no-such-bucket/x", endpoint_url=ceph_s3.endpoint_url)
    (problem,) = check_storage(missing)
    assert problem.startswith("storage.root 's3://zodi-no-such-bucket/x': cannot write")
    assert "bucket" in problem.lower()

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + ceph_s3.secret_key)
    (problem,) = check_storage(good)
    assert "credential" in problem.lower() or "signature" in problem.lower(), problem


def test_preflight_unreachable_s3_endpoint_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cfg = StorageConfig(root="s3://bucket/p", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    t0 = time.perf_counter()
    (problem,) = check_storage(cfg, connect_timeout=2.0)
    assert time.perf_counter() - t0 < 10.0
    assert problem.startswith("storage.root 's3://bucket/p': cannot write a probe object")


def test_preflight_checks_the_quality_scorers_before_any_training(
    synthetic_root, tiny_models_dir, tmp_path
):
    from zodi_core.config import QualityConfig

    cfg = _config(synthetic_root, tiny_models_dir, str(tmp_path / "artifacts"))
    empty_clip = tmp_path / "clip"
    empty_clip.mkdir()
    quality = QualityConfig(clip=str(empty_clip), seg_checkpoint=str(tmp_path / "no.pth"))
    problems = preflight(cfg.model_copy(update={"quality": quality}))
    assert len(problems) == 2, problems
    assert problems[0].startswith("quality.clip:") and "config.json" in problems[0]
    assert problems[1].startswith("quality.seg_checkpoint:") and "no.pth" in problems[1]
    # scoring off: the scorers are not needed, so not checked
    off = quality.model_copy(update={"score": False})
    assert preflight(cfg.model_copy(update={"quality": off})) == []
