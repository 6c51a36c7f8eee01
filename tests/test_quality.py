"""Quality scores against hand computations, the filter, and older manifests."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)

from zodi_core import metrics
from zodi_core.datasets.io import read_label
from zodi_core.evaluation import Areas, load_model
from zodi_core.manifest import read_manifest, write_manifest
from zodi_core.quality import clip as qclip
from zodi_core.quality import figures, filtering, scores
from zodi_core.seg.predict import predict_labels

DEMO = "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"


def save_random_checkpoint(path, seed=0):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from zodi_core.seg.train import load_config

    init_default_scope("mmseg")
    torch.manual_seed(seed)
    model = MODELS.build(load_config(DEMO).model)
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)


def layout_scores(pred, label):
    """The layout scores score_manifest writes: (mIoU %, pixel accuracy %) by zodi_core.metrics."""
    m = metrics.iou_metrics(metrics.confusion_matrix(pred, label))
    return m["mIoU"], m["aAcc"]


def test_layout_scores_match_a_hand_computed_prediction():
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 255], [2, 2, 2, 2]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 0, 0]], np.uint8)
    miou, acc = layout_scores(pred, label)
    # labelled pixels: 11; correct: 0,_,1,1 / 0,0,1 / 2,2 -> 8
    # class 0: inter 3, pred 1+2+2=5 (the ignored pixel's 0 not counted), label 4 -> union 6
    # class 1: inter 3, pred 4, label 3 -> union 4; class 2: inter 2, pred 2, label 4 -> union 4
    assert acc == pytest.approx(100 * 8 / 11)
    assert miou == pytest.approx(100 * (3 / 6 + 3 / 4 + 2 / 4) / 3)
    assert layout_scores(pred, np.full_like(label, 255)) == (None, None)
    with pytest.raises(ValueError, match="shape"):
        layout_scores(pred[:2], label)


def test_layout_scores_agree_with_mmseg_areas_on_one_image():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, (16, 16)).astype(np.uint8)
    label[0] = 255
    pred = np.where(rng.random((16, 16)) < 0.7, label, rng.integers(0, 6, (16, 16))) % 19
    areas = Areas()
    areas.add(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
    miou, acc = layout_scores(pred, label)
    assert miou == pytest.approx(areas.metrics()["mIoU"], abs=0.01)
    assert acc == pytest.approx(areas.metrics()["aAcc"], abs=0.01)


def test_clip_scores_equal_numpy_cosines():
    rng = np.random.default_rng(1)
    gen, src = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    prompt, neutral = rng.normal(size=8), rng.normal(size=8)
    score, direction = qclip.clip_scores(gen, src, prompt, neutral)

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    for i in range(3):
        assert score[i] == pytest.approx(cos(gen[i], prompt))
        d_img = gen[i] / np.linalg.norm(gen[i]) - src[i] / np.linalg.norm(src[i])
        d_txt = prompt / np.linalg.norm(prompt) - neutral / np.linalg.norm(neutral)
        assert direction[i] == pytest.approx(cos(d_img, d_txt))


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return qclip.write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_tiny_clip_round_trips_and_embeds_offline(tiny_clip_dir):
    built, loaded = qclip.build_tiny_clip(0), qclip.load_clip(str(tiny_clip_dir))
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    a, b = built.embed_images([img]), loaded.embed_images([img])
    assert a.shape == (1, 16)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        built.embed_texts(["driving at night"]), loaded.embed_texts(["driving at night"]),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="quality.clip"):
        qclip.load_clip(str(tiny_clip_dir / "missing"))


def test_score_manifest_writes_scores_recomputable_by_hand(tmp_path, tiny_clip_dir):
    data = write_dataset(tmp_path, n=3, height=64, width=128)
    ckpt = save_random_checkpoint(tmp_path / "seg.pth")
    model = load_model(DEMO, ckpt)
    clip = qclip.load_clip(str(tiny_clip_dir))
    out = scores.score_manifest(
        data["paired"], str(tmp_path / "scored.parquet"), seg_model=model, clip=clip,
        batch_size=2, predictions_uri=str(tmp_path / "pred"),
    )  # fmt: skip
    assert out["rows"] == out["scored"] == 3
    rows = read_manifest(out["uri"], "transfer").to_pylist()
    neutral = clip.embed_texts([qclip.NEUTRAL_TEXT])[0]
    prompt = clip.embed_texts(["driving at night"])[0]
    for r in rows:
        # layout: the model's prediction on the generated image against the source label
        gen = np.asarray(Image.open(r["generated_uri"]).convert("RGB"))
        label = read_label(r["label_uri"], r["label_format"])
        [pred] = predict_labels(model, [gen])
        miou, acc = layout_scores(pred, label)
        assert r["layout_miou"] == pytest.approx(miou, abs=1e-4)
        assert r["layout_pixel_acc"] == pytest.approx(acc, abs=1e-4)
        saved = np.asarray(Image.open(tmp_path / "pred" / f"{r['sample_id']}.png"))
        np.testing.assert_array_equal(saved, pred)
        # CLIP: cosines recomputed with numpy from the model's own embeddings
        src = np.asarray(Image.open(r["source_uri"]).convert("RGB"))
        g, s = clip.embed_images([gen])[0], clip.embed_images([src])[0]
        cos = g @ prompt / np.linalg.norm(g) / np.linalg.norm(prompt)
        assert r["clip_score"] == pytest.approx(cos, abs=1e-5)
        d_img = g / np.linalg.norm(g) - s / np.linalg.norm(s)
        d_txt = prompt / np.linalg.norm(prompt) - neutral / np.linalg.norm(neutral)
        cos_d = d_img @ d_txt / np.linalg.norm(d_img) / np.linalg.norm(d_txt)
        assert r["clip_direction"] == pytest.approx(cos_d, abs=1e-5)
        assert r["kept"] is None and r["drop_reason"] is None
    # the source rows' other columns are unchanged
    before = read_manifest(data["paired"], "transfer").select(["sample_id", "generated_uri"])
    after = read_manifest(out["uri"], "transfer").select(["sample_id", "generated_uri"])
    assert before.equals(after)


def test_score_manifest_batched_equals_single(tmp_path):
    data = write_dataset(tmp_path, n=3)
    clip = qclip.build_tiny_clip(0)
    model = load_model(DEMO, save_random_checkpoint(tmp_path / "seg.pth"))
    one = scores.score_manifest(
        data["paired"], str(tmp_path / "a.parquet"), clip=clip, seg_model=model, batch_size=1
    )
    three = scores.score_manifest(
        data["paired"], str(tmp_path / "b.parquet"), clip=clip, seg_model=model, batch_size=3
    )
    for column in scores.SCORE_COLUMNS:
        a = read_manifest(one["uri"]).column(column).to_numpy()
        b = read_manifest(three["uri"]).column(column).to_numpy()
        np.testing.assert_allclose(a, b, atol=1e-4)
    # no seg model given: layout columns stay null
    only_clip = scores.score_manifest(data["paired"], str(tmp_path / "c.parquet"), clip=clip)
    assert read_manifest(only_clip["uri"]).column("layout_miou").null_count == 3


def test_predict_labels_batched_equals_predict_label_per_image(tmp_path):
    model = load_model(DEMO, save_random_checkpoint(tmp_path / "seg.pth"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in
              [(64, 128, 3), (64, 128, 3), (48, 96, 3)]]  # fmt: skip
    for scale in (None, (128, 64)):
        batched = predict_labels(model, images, scale)
        for img, pred in zip(images, batched, strict=True):
            np.testing.assert_array_equal(pred, predict_labels(model, [img], scale)[0])


def _scored_rows(values):
    return [
        {"sample_id": f"s{i}", "layout_miou": m, "clip_score": c} for i, (m, c) in enumerate(values)
    ]


def test_filter_reasons_thresholds_fraction_and_nulls():
    rows = _scored_rows([(50.0, 0.3), (10.0, 0.3), (30.0, 0.1), (None, None), (20.0, 0.2)])
    reasons = filtering.filter_reasons(rows, min_layout_miou=15, min_clip=0.15)
    assert [bool(r) for r in reasons] == [False, True, True, False, False]
    assert reasons[1] == ["layout_miou 10.0 < 15"] and reasons[2] == ["clip_score 0.100 < 0.15"]
    # floor(0.4 * 5) = 2 lowest layout scores: s1 (10) and s4 (20); the null row is not ranked
    reasons = filtering.filter_reasons(rows, drop_lowest_fraction=0.4)
    assert [i for i, r in enumerate(reasons) if r] == [1, 4]
    with pytest.raises(ValueError, match="drop_lowest_fraction"):
        filtering.filter_reasons(rows, drop_lowest_fraction=1.0)


def test_apply_filter_flags_every_row_and_training_reads_the_kept(tmp_path):
    data = write_dataset(tmp_path, n=4)
    rows = read_manifest(data["paired"]).to_pylist()
    for r, m in zip(rows, (60.0, 5.0, 40.0, 8.0), strict=True):
        r["layout_miou"] = m
    scored = write_manifest(rows, str(tmp_path / "scored.parquet"), "transfer")
    out = filtering.apply_filter(
        scored, str(tmp_path / "flagged.parquet"), str(tmp_path / "train.parquet"),
        min_layout_miou=10,
    )  # fmt: skip
    assert (out["rows"], out["kept"], out["dropped"]) == (4, 2, 2)
    assert out["by_reason"] == {"layout_miou": 2}
    flagged = read_manifest(out["uri"], "transfer").to_pylist()
    assert [r["kept"] for r in flagged] == [True, False, True, False]  # nothing deleted
    assert flagged[1]["drop_reason"] == "layout_miou 5.0 < 10"
    # training reads the kept rows: the seg dataset reader sees exactly them
    from zodi_core.seg.datasets import read_pairs

    ids = [p["sample_id"] for p in read_pairs(out["train_uri"])]
    assert ids == [flagged[0]["sample_id"], flagged[2]["sample_id"]]
    assert [r["kept"] for r in read_manifest(out["uri"]).to_pylist()].count(True) == 2
    with pytest.raises(ValueError, match="drops all 4 rows"):
        filtering.apply_filter(
            scored, str(tmp_path / "f2.parquet"), str(tmp_path / "t2.parquet"), min_layout_miou=99
        )


def test_a_manifest_without_quality_columns_still_reads_and_rewrites(tmp_path):
    data = write_dataset(tmp_path, n=2)
    table = read_manifest(data["paired"])
    old = table.drop_columns([*scores.SCORE_COLUMNS, "kept", "drop_reason"])
    old = old.replace_schema_metadata(table.schema.metadata)
    buf = io.BytesIO()
    pq.write_table(old, buf)
    (tmp_path / "old.parquet").write_bytes(buf.getvalue())
    back = read_manifest(str(tmp_path / "old.parquet"), "transfer")
    assert back.column("layout_miou").null_count == 2 and back.column("kept").type == pa.bool_()
    # concatenating old and new shard manifests (the merge step) works
    merged = pa.concat_tables([back, table])
    write_manifest(merged, str(tmp_path / "merged.parquet"), "transfer")
    assert read_manifest(str(tmp_path / "merged.parquet")).num_rows == 4


def test_score_summary_and_worst_grid(tmp_path):
    data = write_dataset(tmp_path, n=3)
    rows = read_manifest(data["paired"]).to_pylist()
    for r, m in zip(rows, (70.0, 20.0, 45.0), strict=True):
        r["layout_miou"], r["layout_pixel_acc"], r["clip_score"] = m, m + 10, 0.2
    scored = write_manifest(rows, str(tmp_path / "scored.parquet"), "transfer")
    summary = figures.score_summary(scored)
    assert summary["columns"]["layout_miou"]["histogram"]["counts"][2] == 1  # 20 in [20, 30)
    assert summary["columns"]["layout_miou"]["mean"] == pytest.approx(45.0)
    png, shown = figures.render_worst_grid(scored, n=2, cell=(64, 32))
    assert [r["layout_miou"] for r in shown] == [20.0, 45.0]
    assert Image.open(io.BytesIO(png)).size == (4 * 64, 2 * 32)
    assert figures.render_histograms_png({"night": summary})[:4] == b"\x89PNG"
