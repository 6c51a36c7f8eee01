"""Evaluation: IoU against a hand-computed confusion matrix, seeds, proxy, report files."""

import json

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)

from zodi_core.config import EvalConfig
from zodi_core.evaluation import (
    Areas,
    aggregate_runs,
    evaluate_checkpoint,
    format_miou_table,
    load_model,
)
from zodi_core.labels import CLASSES
from zodi_core.seg.adapt import adapt_config
from zodi_core.seg.train import CONFIG_DIR, load_config

DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"


def test_areas_iou_matches_a_hand_computed_confusion_matrix():
    label = torch.tensor([[0, 0, 1, 1, 2, 255],
                          [0, 0, 1, 2, 2, 255]])  # fmt: skip
    pred = torch.tensor([[0, 1, 1, 1, 2, 13],
                         [0, 0, 2, 2, 13, 0]])  # fmt: skip
    # Hand-computed confusion (rows label, columns prediction) over the 10 valid pixels:
    #   label 0: 3 → 0, 1 → 1;  label 1: 2 → 1, 1 → 2;  label 2: 2 → 2, 1 → 13.
    cm = np.zeros((19, 19), np.int64)
    cm[0, 0], cm[0, 1], cm[1, 1], cm[1, 2], cm[2, 2], cm[2, 13] = 3, 1, 2, 1, 2, 1
    areas = Areas()
    areas.add(pred, label)
    np.testing.assert_array_equal(areas.confusion, cm)
    m = areas.metrics()
    iou = {c: cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c]) for c in (0, 1, 2, 13)}
    assert iou[0] == 3 / 4 and iou[1] == 2 / 4 and iou[2] == 2 / 4 and iou[13] == 0
    for c, v in iou.items():
        assert m["per_class"][CLASSES[c]] == pytest.approx(100 * v, abs=0.01)
    assert m["per_class"]["sky"] is None  # absent from labels and predictions
    assert m["mIoU"] == pytest.approx(100 * np.mean(list(iou.values())), abs=0.01)
    assert m["aAcc"] == pytest.approx(100 * np.trace(cm) / cm.sum(), abs=0.01)


def test_areas_reject_unexpected_label_ids_and_shape_mismatch():
    areas = Areas()
    with pytest.raises(ValueError, match=r"ids outside 0..18 and 255: \[40\]"):
        areas.add(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 40], [1, 255]]))
    with pytest.raises(ValueError, match="shape"):
        areas.add(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))


def test_aggregate_runs_gives_mean_and_sample_std_over_seeds():
    def run(miou):
        return {"mIoU": miou, "aAcc": 90.0, "images": 4,
                "per_class": {c: (miou if c == "road" else None) for c in CLASSES}}  # fmt: skip

    agg = aggregate_runs([run(40.0), run(44.0), run(48.0)])
    assert agg["mIoU"] == 44.0 and agg["mIoU_std"] == 4.0 and agg["aAcc_std"] == 0.0
    assert agg["per_class"]["road"] == 44.0 and agg["per_class"]["sky"] is None


def save_random_checkpoint(path, config, seed, zodi=True):
    """A random checkpoint of ``config`` as ``zodi train`` saves it (ZoDiSegmentor keys) or plain."""
    init_default_scope("mmseg")
    torch.manual_seed(seed)
    cfg = load_config(config)
    if zodi:
        adapt_config(cfg)
    model = MODELS.build(cfg.model)
    torch.save({"state_dict": model.state_dict(), "meta": {"seed": seed}}, path)
    return str(path)


def test_evaluate_checkpoint_reports_seeds_best_and_proxy(tmp_path):
    data = write_dataset(tmp_path / "data", n=2, height=32, width=64, split="val")
    ckpts = [save_random_checkpoint(tmp_path / f"seed{s}.pth", DEMO, s) for s in (0, 1)]
    out = evaluate_checkpoint(
        ckpts, DEMO, [data["target"]], str(tmp_path / "report"),
        proxy_manifest=data["paired"], best_checkpoint=ckpts[0],
        eval_config=EvalConfig.preset("demo"), device="cpu",
    )  # fmt: skip
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    target, proxy = report["targets"]["acdc-night-val"], report["targets"]["proxy-night"]
    assert report["seeds"] == 2 and len(target["runs"]) == 2
    assert target["summary"]["mIoU_std"] is not None and target["summary"]["images"] == 2
    runs = [r["mIoU"] for r in target["runs"]]
    assert target["summary"]["mIoU"] == pytest.approx(np.mean(runs), abs=0.01)
    assert target["best"]["mIoU"] == runs[0]
    assert proxy["proxy"] and proxy["domain"] == "night" and not target["proxy"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "±" in md and "(proxy-night)" in md
    for png in out["confusion_png"]:
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    table = format_miou_table(out["metrics"]).splitlines()
    assert table[0].split() == ["target", "images", "mIoU", "aAcc"]
    row = next(line for line in table if line.startswith("acdc-night-val"))
    assert f"{target['summary']['mIoU']:.2f} ± {target['summary']['mIoU_std']:.2f}" in row


def test_evaluate_checkpoint_refuses_cuda_on_a_machine_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = write_dataset(tmp_path / "data", n=1, height=32, width=64, split="val")
    ckpt = save_random_checkpoint(tmp_path / "c.pth", DEMO, 0)
    with pytest.raises(ValueError, match=r"device: 'cuda:0' asked for, but no CUDA device"):
        evaluate_checkpoint(ckpt, DEMO, [data["target"]], str(tmp_path / "o"), device="cuda:0")


def test_load_model_moves_checkpoints_between_zodi_and_plain_configs(tmp_path):
    # A hand-written ZoDi config (the wrapper in the file, as before it moved into code).
    zodi_config = tmp_path / "zodi_config.py"
    zodi_config.write_text(
        f"_base_ = ['{CONFIG_DIR / DEMO}']\n"
        "model = dict(_delete_=True, type='ZoDiSegmentor', segmentor={{_base_.model}})\n"
    )
    ckpt = save_random_checkpoint(tmp_path / "zodi.pth", DEMO, 0)
    zodi = load_model(str(zodi_config), ckpt)
    plain = load_model(DEMO, ckpt)
    x = torch.randn(1, 3, 32, 64)
    torch.testing.assert_close(zodi._forward(x), plain._forward(x))
    plain_ckpt = save_random_checkpoint(tmp_path / "plain.pth", DEMO, 1, zodi=False)
    torch.testing.assert_close(
        load_model(str(zodi_config), plain_ckpt)._forward(x),
        load_model(DEMO, plain_ckpt)._forward(x),
    )
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_model(DEMO, str(tmp_path / "missing.pth"))


def test_evaluate_checkpoint_names_an_empty_manifest(tmp_path):
    from zodi_core.manifest import write_manifest

    empty = write_manifest([], str(tmp_path / "empty.parquet"), "samples")
    with pytest.raises(ValueError, match="empty"):
        evaluate_checkpoint(str(tmp_path / "x.pth"), DEMO, [empty], str(tmp_path / "out"))
