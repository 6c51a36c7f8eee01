"""Training: Runner end to end on the demo configs, resume, checkpoints, configs, CLI."""

import json
import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)

from zodi_cli import main
from zodi_core.config import ConfigError
from zodi_core.seg.adapt import adapt_config
from zodi_core.seg.checkpoint import load_checkpoint_file
from zodi_core.seg.hooks import ZoDiSyncWorkDirHook, plan_sync
from zodi_core.seg.train import CONFIG_DIR, load_config, resolve_pretrained, train_model

#: ZoDi is added to these plain configs in code (train_model / zodi train), unless source_only.
DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"
RELEASE = "deeplabv3plus_r50-release_4xb-100e_cityscapes-512x1024.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_data")
    train = write_dataset(root, n=4)
    val = write_dataset(root, n=2, split="val")
    return {"paired": train["paired"], "samples": train["samples"], "val": val["target"],
            "val_paired": val["paired"]}  # fmt: skip


def scalars(work_dir: Path) -> list[dict]:
    """Every record of mmengine's scalars.json files under a work dir, in run order."""
    records = []
    for f in sorted(work_dir.glob("*/vis_data/scalars.json")):
        records += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return records


def test_train_model_runs_runner_train_and_val_end_to_end(data, tmp_path):
    from mmengine.runner import Runner

    from zodi_core.seg.checkpoint import checkpoint_loading

    out = train_model(DEMO, data["paired"], str(tmp_path / "work"), max_iters=2,
                      val_manifest_uri=data["val"])  # fmt: skip
    assert Path(out["checkpoint"]).is_file() and out["iterations"] == 2
    assert {"loss", "loss_sim", "ce_src", "ce_gen"} <= set(out["losses"]) and out["seconds"] > 0
    records = scalars(tmp_path / "work")
    train_logs = [r for r in records if "loss_sim" in r]
    assert train_logs and {"cos_mean", "ce_src", "ce_gen"} <= set(train_logs[0])
    assert any("mIoU" in r for r in records), "Runner.train() did not validate at the end"
    # Runner.val() on the trained checkpoint, from the same config file (ZoDi added in code).
    cfg = adapt_config(load_config(DEMO))
    cfg.val_dataloader.dataset.manifest = data["val"]
    cfg.work_dir = str(tmp_path / "val")
    cfg.load_from = out["checkpoint"]
    cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    runner = Runner.from_cfg(cfg)
    with checkpoint_loading():
        metrics = runner.val()
    assert 0.0 <= metrics["mIoU"] <= 100.0


def test_train_model_resume_continues_the_iteration_count(data, tmp_path):
    work = tmp_path / "work"
    log_every = {"default_hooks.logger.interval": 1}
    first = train_model(DEMO, data["paired"], str(work), max_iters=2, overrides=log_every)
    assert first["iterations"] == 2 and Path(first["checkpoint"]).name == "iter_2.pth"
    second = train_model(DEMO, data["paired"], str(work), max_iters=3, resume=True,
                         overrides=log_every)  # fmt: skip
    assert second["iterations"] == 3 and Path(second["checkpoint"]).name == "iter_3.pth"
    steps = [r["step"] for r in scalars(work) if "loss_sim" in r]
    assert steps == [1, 2, 3], f"resumed run did not continue from iteration 2: {steps}"


def test_train_model_resume_without_a_checkpoint_is_an_error(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="last_checkpoint"):
        train_model(DEMO, data["paired"], str(tmp_path / "empty"), max_iters=1, resume=True)


def test_checkpoint_loads_under_weights_only_without_environment_variables(tmp_path, monkeypatch):
    from mmengine.logging import MessageHub

    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    hub = MessageHub.get_instance("zodi-test-ckpt")
    hub.update_scalar("train/loss", 1.25)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "message_hub": hub.state_dict()}, path)
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(path)  # torch's default: weights only, mmengine classes refused
    ckpt = load_checkpoint_file(str(path))
    assert ckpt["message_hub"]["log_scalars"]["train/loss"].current() == 1.25
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(path)  # the allowance ended with the call


class _Sneaky:
    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        return getattr, (HistoryBuffer, "__init__")


def test_checkpoint_loading_refuses_arbitrary_getattr(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match="refused getattr"):
        load_checkpoint_file(str(path))


def test_load_config_adds_new_keys_as_mmengine_and_warns_about_a_likely_misspelling():
    # mmengine's --cfg-options adds keys a config lacks (mmseg's train tool: e.g.
    # model.backbone.init_cfg=None); a new key close to an existing one warns "did you mean"
    with pytest.warns(
        UserWarning, match=r"train_cfg.max_epoch.*did you mean 'train_cfg.max_epochs'"
    ):
        cfg = load_config(DEMO, {"train_cfg.max_epoch": 3})
    assert cfg.train_cfg.max_epoch == 3
    with pytest.warns(UserWarning, match="model.decode_head.chanels"):
        load_config(DEMO, {"model.decode_head.chanels": 16})
    with pytest.raises(ConfigError, match=r"param_scheduler is a list of 1 items.*'5'"):
        load_config(DEMO, {"param_scheduler.5.power": 1.0})
    cfg = load_config(DEMO, {"model.decode_head.channels": 16, "param_scheduler.0.power": 1.0})
    assert cfg.model.decode_head.channels == 16 and cfg.param_scheduler[0].power == 1.0


def test_train_model_names_an_unknown_key_in_a_config_file(data, tmp_path):
    bad = tmp_path / "bad_config.py"
    bad.write_text(f"_base_ = ['{CONFIG_DIR / DEMO}']\nmodel = dict(decode_head=dict(chanels=8))\n")
    with pytest.raises(ConfigError, match="chanels"):
        train_model(str(bad), data["paired"], str(tmp_path / "w"), max_iters=1)


def test_resolve_pretrained_fails_clearly_without_network(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    cfg = adapt_config(load_config(RELEASE))
    with pytest.raises(FileNotFoundError, match=r"resnet50-0676ba61.pth.*--pretrained PATH"):
        resolve_pretrained(cfg)
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"stub")
    assert resolve_pretrained(cfg, str(weights)) == str(weights)
    assert cfg.model.segmentor.backbone.init_cfg.checkpoint == str(weights)
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stub")
    assert resolve_pretrained(load_config(RELEASE)).endswith("resnet50-0676ba61.pth")


def test_release_config_is_the_undilated_output_stride_32_deeplab():
    cfg = adapt_config(Config.fromfile(str(CONFIG_DIR / RELEASE)))
    seg = cfg.model.segmentor
    assert cfg.model.type == "ZoDiSegmentor" and cfg.model.lambda_sim == 0.1
    assert seg.backbone.strides == (1, 2, 2, 2) and seg.backbone.dilations == (1, 1, 1, 1)
    assert seg.decode_head.dilations == (1, 6, 12, 18)
    assert cfg.optim_wrapper.optimizer == dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=1e-4)
    assert cfg.param_scheduler[0].power == 0.9 and cfg.train_cfg.max_epochs == 100
    assert cfg.train_dataloader.batch_size == 4
    stock = adapt_config(
        Config.fromfile(str(CONFIG_DIR / "deeplabv3plus_r50-d8_4xb-100e_cityscapes-512x1024.py"))
    )
    assert stock.model.segmentor.backbone.dilations == (1, 1, 2, 4)


def test_sync_hook_mirrors_new_checkpoints_and_rotations(tmp_path):
    work, target = tmp_path / "work", tmp_path / "remote"
    work.mkdir()
    (work / "iter_1.pth").write_bytes(b"1")
    (work / "last_checkpoint").write_text(str(work / "iter_1.pth"))
    hook = ZoDiSyncWorkDirHook(target=str(target))
    assert hook.sync(work) == ["iter_1.pth", "last_checkpoint"]  # the marker goes last
    (work / "iter_1.pth").unlink()
    (work / "iter_2.pth").write_bytes(b"2")
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth") + " ")
    assert hook.sync(work) == ["iter_2.pth", "last_checkpoint"]
    assert sorted(p.name for p in target.iterdir()) == ["iter_2.pth", "last_checkpoint"]
    assert plan_sync({"a": (1, 1)}, {"a": (1, 1)}) == ([], [])


def test_cli_train_then_evaluate_write_checkpoint_and_report(data, tmp_path, capsys):
    work, report = tmp_path / "work", tmp_path / "report"
    assert main(["train", "--config", DEMO, "--source-only", "--paired-manifest", data["paired"],
                 "--work-dir", str(work), "--max-iters", "1", "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(summary["checkpoint"]).is_file() and summary["source_only"]
    assert main(["evaluate", "--checkpoint", summary["checkpoint"], "--config", DEMO,
                 "--manifest", data["val"], "--proxy-manifest", data["val_paired"],
                 "--out", str(report), "--preset", "demo"]) == 0  # fmt: skip
    result = json.loads((report / "report.json").read_text())
    assert set(result["targets"]) == {"acdc-night-val", "proxy-night"}
    table = capsys.readouterr().out.splitlines()  # the mIoU table, then where the report is
    assert table[0].split() == ["target", "images", "mIoU", "aAcc"]
    assert {line.split()[0] for line in table[2:4]} == {"acdc-night-val", "proxy-night"}
    assert table[-1] == f"report: {report / 'report.md'}"
    assert "proxy-night" in (report / "report.md").read_text()


def test_cli_train_prints_progress_then_losses_and_checkpoint(data, tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["train", "--config", DEMO, "--paired-manifest", data["paired"],
                 "--work-dir", str(work), "--max-iters", "2", "--lambda-sim", "0.2"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("iter ")]
    assert progress and progress[-1].startswith("iter 2/2  loss ") and "loss_sim" in progress[-1]
    assert "ETA" in progress[-1]
    assert "mmengine" not in captured.out + captured.err  # the full log only with --verbose
    assert "final losses: loss " in captured.out
    assert f"checkpoint: {work / 'iter_2.pth'}" in captured.out
    config = Config.fromfile(str(work / DEMO))  # mmengine dumps the effective config here
    assert config.model.lambda_sim == 0.2  # --lambda-sim reached the model through TrainConfig


def test_cli_train_refuses_cuda_on_a_machine_without_it(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", "--config", DEMO, "--paired-manifest", data["paired"],
                 "--work-dir", str(tmp_path), "--device", "cuda:0"])  # fmt: skip
    assert code == 2
    assert (
        "zodi train: error: device: 'cuda:0' asked for, but no CUDA device"
        in capsys.readouterr().err
    )


def test_format_progress_is_one_compact_line():
    from zodi_core.seg.hooks import format_progress

    line = format_progress(
        12, 40, {"loss": 1.23456, "ce_gen": 0.5, "loss_sim": 0.01, "acc": 9}, 31.4
    )
    assert line == "iter 12/40  loss 1.235  loss_sim 0.01  ce_gen 0.5  ETA 0:00:31"


def test_cli_train_reports_a_misspelt_option_as_a_user_error(data, tmp_path, capsys):
    code = main(["train", "--config", DEMO, "--paired-manifest", data["paired"],
                 "--work-dir", str(tmp_path), "--cfg-options", "model.decode_head.chanels=8"])  # fmt: skip
    assert code == 2
    assert "model.decode_head.chanels" in capsys.readouterr().err


def test_stage_resume_fetches_the_last_checkpoint_and_repoints_the_marker(tmp_path):
    from zodi_core.seg.resume import stage_resume

    remote, staging = tmp_path / "remote", tmp_path / "staging"
    remote.mkdir()
    staging.mkdir()
    (remote / "iter_4.pth").write_bytes(b"weights")
    (remote / "last_checkpoint").write_text("/tmp/zodi-train-old/iter_4.pth")  # another machine
    local = stage_resume(str(remote), staging, {})
    assert (
        local == str(staging / "iter_4.pth") and (staging / "iter_4.pth").read_bytes() == b"weights"
    )
    assert (staging / "last_checkpoint").read_text() == local
    assert stage_resume(str(tmp_path / "nothing"), staging, {}) is None


def test_a_crash_loses_only_the_work_since_the_last_checkpoint(data, tmp_path, monkeypatch):
    from zodi_core.seg.segmentor import ZoDiSegmentor

    work = tmp_path / "work"
    real_step = ZoDiSegmentor.train_step
    calls = {"n": 0}

    def crash_at_third_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(ZoDiSegmentor, "train_step", crash_at_third_step)
    log_every = {"default_hooks.logger.interval": 1}
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_model(DEMO, data["paired"], str(work), max_iters=4, overrides=log_every)
    assert Path((work / "last_checkpoint").read_text()).name == "iter_2.pth"
    monkeypatch.setattr(ZoDiSegmentor, "train_step", real_step)
    out = train_model(DEMO, data["paired"], str(work), max_iters=4, resume=True,
                      overrides=log_every)  # fmt: skip
    assert out["iterations"] == 4
    assert [r["step"] for r in scalars(work) if "loss_sim" in r] == [1, 2, 3, 4]


@pytest.mark.ceph
def test_train_model_on_s3_work_dir_uploads_and_resumes_from_ceph(
    data, s3_root, ceph_s3, monkeypatch
):
    from zodi_core import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", ceph_s3.endpoint_url)
    work = f"{s3_root}/train"
    first = train_model(DEMO, data["paired"], work, max_iters=2)
    assert first["checkpoint"].startswith("s3://") and first["checkpoint"].endswith("iter_2.pth")
    keys = list(storage.open_storage(work).list())
    assert "iter_2.pth" in keys and "last_checkpoint" in keys
    assert any(k.endswith("scalars.json") for k in keys)  # logs travel with the checkpoints

    # A new process (nothing staged locally) resumes from what is in the bucket.
    second = train_model(DEMO, data["paired"], work, max_iters=3, resume=True)
    assert second["iterations"] == 3 and second["checkpoint"].endswith("iter_3.pth")
    assert "iter_3.pth" in set(storage.open_storage(work).list())
