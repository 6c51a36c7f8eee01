"""zodi predict: label maps (train ids) and overlays of an adapted model on a folder or manifest."""

from __future__ import annotations

import json

import numpy as np
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image
from seg_testdata import (
    save_png,
    scene,
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)

from zodi_cli import main
from zodi_core.seg.adapt import adapt_config
from zodi_core.seg.predict import colour_overlay, list_inputs, predict_images
from zodi_core.seg.train import load_config

DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"


def zodi_checkpoint(path) -> str:
    init_default_scope("mmseg")
    torch.manual_seed(0)
    model = MODELS.build(adapt_config(load_config(DEMO)).model)
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)


def test_predict_images_writes_train_id_maps_and_overlays_for_a_folder(tmp_path):
    ckpt = zodi_checkpoint(tmp_path / "zodi.pth")
    folder = tmp_path / "images"
    for i, (h, w) in enumerate([(40, 80), (64, 128)]):
        suffix = ".png" if i else ".jpg"  # PIL writes by suffix: one JPEG, one PNG
        save_png(folder / ("sub" if i else "") / f"img{i}{suffix}", scene(i, h, w)[0])
    assert [i for i, _ in list_inputs(str(folder))] == ["img0", "sub/img1"]
    out = predict_images(DEMO, ckpt, str(folder), str(tmp_path / "out"), device="cpu",
                         progress=False)  # fmt: skip
    assert out["images"] == 2
    for sid, shape in (("img0", (40, 80)), ("sub/img1", (64, 128))):
        label = np.asarray(Image.open(tmp_path / "out" / "labels" / f"{sid}.png"))
        overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{sid}.png"))
        assert label.shape == shape and label.dtype == np.uint8 and label.max() <= 18
        assert overlay.shape == (*shape, 3)


def test_colour_overlay_blends_the_cityscapes_colour_of_each_class():
    rgb = np.zeros((1, 2, 3), np.uint8)
    out = colour_overlay(rgb, np.array([[0, 10]], np.uint8), alpha=1.0)
    assert out[0, 0].tolist() == [128, 64, 128] and out[0, 1].tolist() == [70, 130, 180]


def test_cli_predict_on_a_manifest_prints_where_it_wrote(tmp_path, capsys):
    ckpt = zodi_checkpoint(tmp_path / "zodi.pth")
    data = write_dataset(tmp_path / "data", n=2, height=32, width=64)
    out = tmp_path / "pred"
    assert main(["predict", "--config", DEMO, "--checkpoint", ckpt, "--input", data["target"],
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert f"predicted 2 images: labels {out / 'labels'}" in captured.out
    assert "2/2" in captured.err  # the progress bar
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["train_000.png", "train_001.png"]
    assert main(["predict", "--config", DEMO, "--checkpoint", ckpt, "--input", data["target"],
                 "--out", str(out), "--device", "cpu", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 2
