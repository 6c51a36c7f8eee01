"""`zodi score`, `zodi tune-strength` and `zodi tiny-clip` on synthetic data and tiny models."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from seg_testdata import (
    torch_single_thread,  # noqa: F401  (autouse fixture)
    write_dataset,
)
from test_quality import DEMO, save_random_checkpoint

from zodi_cli import main
from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import ingest_dataset
from zodi_core.manifest import read_manifest
from zodi_core.quality import scores
from zodi_core.transfer import tune


def _run(argv: list[str], capsys) -> tuple[int, dict, str]:
    rc = main([*argv, "--json"])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out.strip().splitlines()[-1]), captured.out + captured.err


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("clip") / "clip"
    assert main(["tiny-clip", "--out", str(out)]) == 0
    return str(out)


def test_score_writes_scores_flags_and_the_worst_grid(tmp_path, clip_dir, capsys):
    data = write_dataset(tmp_path, n=4)
    ckpt = save_random_checkpoint(tmp_path / "seg.pth")
    argv = [
        "score", "--manifest", data["paired"], "--seg-config", DEMO, "--seg-checkpoint", ckpt,
        "--clip", clip_dir, "--drop-lowest-fraction", "0.5", "--worst", "2",
        "--out", str(tmp_path / "q" / "scored.parquet"),
    ]  # fmt: skip
    rc, summary, out = _run(argv, capsys)
    assert rc == 0, out
    assert summary["scored"] == 4 and summary["filter"]["dropped"] == 2
    rows = read_manifest(str(tmp_path / "q" / "scored.parquet"), "transfer").to_pylist()
    assert all(r[c] is not None for r in rows for c in scores.SCORE_COLUMNS)
    dropped = sorted(rows, key=lambda r: (r["layout_miou"], r["sample_id"]))[:2]
    assert {r["sample_id"] for r in rows if r["kept"] is False} == {r["sample_id"] for r in dropped}
    assert read_manifest(str(tmp_path / "q" / "train.parquet")).num_rows == 2
    grid = Image.open(io.BytesIO((tmp_path / "q" / "worst.png").read_bytes()))
    assert grid.size[1] == 2 * 128  # two rows of the default cell height
    assert "4 images scored" in out and "2 kept, 2 dropped" in out


def test_score_errors_are_one_line_with_exit_2(tmp_path, clip_dir, capsys):
    data = write_dataset(tmp_path, n=1)
    rc = main(["score", "--manifest", data["paired"], "--seg-config", DEMO, "--clip", clip_dir])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("zodi score: error: --seg-config and --seg-checkpoint")
    rc = main(["score", "--manifest", str(tmp_path / "nope.parquet"), "--clip", clip_dir])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "--manifest" in err[-1] and len(err) == 1
    rc = main(["score", "--manifest", data["paired"], "--clip", clip_dir, "--scale", "10by5"])
    assert rc == 2 and "--scale" in capsys.readouterr().err


def test_recommend_strength_is_the_strongest_within_the_margin():
    table = [
        {"strength": 0.4, "layout_miou": 60.0},
        {"strength": 0.6, "layout_miou": 57.0},
        {"strength": 0.8, "layout_miou": 51.0},
        {"strength": 0.9, "layout_miou": 30.0},
    ]
    assert tune.recommend_strength(table, margin=5) == 0.6
    assert tune.recommend_strength(table, margin=10) == 0.8
    assert tune.recommend_strength([{"strength": 0.4, "layout_miou": None}], 5) is None


def test_tune_strength_on_demo_data(synthetic_root, tiny_models_dir, tmp_path, clip_dir, capsys):
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="val")
    val = ingest_dataset(spec, str(tmp_path / "val.parquet"), progress=False).manifest_uri
    ckpt = save_random_checkpoint(tmp_path / "seg.pth")
    argv = [
        "tune-strength", "--manifest", val, "--domain", "night", "--strengths", "0.9,0.4",
        "--n", "1", "--models", str(tiny_models_dir), "--preset", "demo", "--steps", "3",
        "--seg-config", DEMO, "--seg-checkpoint", ckpt, "--clip", clip_dir, "--margin", "100",
        "--out", str(tmp_path / "tune"),
    ]  # fmt: skip
    rc, summary, out = _run(argv, capsys)
    assert rc == 0, out
    assert [r["strength"] for r in summary["rows"]] == [0.4, 0.9]
    assert all(r["images"] == 1 and r["layout_miou"] is not None for r in summary["rows"])
    # a margin of 100 points keeps every strength: the strongest is recommended
    assert summary["recommended"] == 0.9
    assert Image.open(summary["plot"]).format == "PNG"
    table = Path(summary["table"]).read_text()
    assert "| 0.9 **(recommended)** | 1 |" in table and "Recommended: 0.9" in out
    # one transfer manifest per strength, each with its own strength
    for s in (0.4, 0.9):
        m = tmp_path / "tune" / "quality" / "tune" / "night" / f"strength-{s:g}.parquet"
        assert read_manifest(str(m)).column("strength").to_pylist() == [pytest.approx(s)]
