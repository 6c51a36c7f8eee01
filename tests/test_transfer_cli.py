"""`zodi transfer`, `zodi preview` and `zodi tiny-models` end to end on synthetic data and tiny models."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zodi_cli import main
from zodi_core.config import DatasetSpec, TransferConfig
from zodi_core.datasets.ingest import ingest_dataset
from zodi_core.manifest import read_manifest
from zodi_core.transfer.lineage import generation_digest
from zodi_core.transfer.runner import read_png_metadata, transfer_manifest

FAST = ["--preset", "demo", "--steps", "2", "--strength", "1.0"]


@pytest.fixture(scope="module")
def samples_manifest(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Samples manifest of the synthetic Cityscapes val split (256x128 images)."""
    out = tmp_path_factory.mktemp("manifests") / "cityscapes-val.parquet"
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="val")
    ingest_dataset(spec, str(out), progress=False)
    return str(out)


def _run(argv: list[str], capsys) -> tuple[int, dict, str]:
    rc = main([*argv, "--json"])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_transfer_writes_one_image_and_row_per_sample_and_rerun_writes_nothing(
    samples_manifest, tiny_models_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = [
        "transfer",
        "--manifest",
        samples_manifest,
        "--domain",
        "night",
        "--models",
        str(tiny_models_dir),
        *FAST,
        "--out",
        str(out),
    ]
    rc, summary, _ = _run(argv, capsys)
    samples = read_manifest(samples_manifest, "samples")
    n = samples.num_rows
    assert rc == 0 and (summary["written"], summary["skipped"], summary["failed"]) == (n, 0, 0)

    paired = out / "paired" / "domain=night" / "paired.parquet"  # the flows' layout
    table = read_manifest(str(paired), "transfer")
    rows = table.to_pylist()
    assert [r["sample_id"] for r in rows] == samples.column("sample_id").to_pylist()
    images = sorted((out / "images" / "night").rglob("*.png"))
    assert len(images) == n
    for row in rows:
        assert row["status"] == "ok" and row["error"] is None
        path = Path(row["generated_uri"])
        digest = row["config_digest"]
        assert path == out / "images" / "night" / digest / f"{row['sample_id']}.png"
        with Image.open(path) as im:
            assert im.size == (128, 64)  # demo preset: short side 64 of a 256x128 source
        assert read_png_metadata(path.read_bytes())["config_digest"] == row["config_digest"]
        assert row["k"] == 2 and row["prompt"] == "driving at night, best quality"
        assert json.loads(row["model_revisions"])["base"].startswith(str(tiny_models_dir))
    mtimes = {p: p.stat().st_mtime_ns for p in images}

    assert main(argv) == 0  # without --json: one human summary line, what and where
    assert capsys.readouterr().out.strip().splitlines() == [
        f"[transfer] night: 0 written, {n} skipped, 0 failed → {out} (manifest {paired})"
    ]

    rc, summary, _ = _run(argv + ["--batch-size", "1"], capsys)  # batch size is not in the digest
    assert rc == 0 and (summary["written"], summary["skipped"]) == (0, n)
    assert {p: p.stat().st_mtime_ns for p in images} == mtimes
    rerun = read_manifest(str(paired), "transfer").to_pylist()
    assert [r["status"] for r in rerun] == ["skipped"] * n
    assert [r["generated_uri"] for r in rerun] == [r["generated_uri"] for r in rows]
    assert [r["seed"] for r in rerun] == [r["seed"] for r in rows]

    rc, summary, _ = _run(argv[:-2] + ["--seed", "1", "--out", str(out)], capsys)
    assert rc == 0 and summary["written"] == n  # another config digest regenerates


def test_transfer_records_a_failing_image_and_writes_the_others(
    synthetic_copy, tiny_models_dir, tmp_path, capsys
):
    manifest_uri = str(tmp_path / "samples.parquet")
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_copy / "cityscapes"), split="val")
    ingest_dataset(spec, manifest_uri, progress=False)
    samples = read_manifest(manifest_uri, "samples").to_pylist()
    bad = samples[1]
    Image.fromarray(np.zeros((10, 20), dtype=np.uint8)).save(bad["label_uri"])  # wrong size

    rc, summary, err = _run(
        [
            "transfer",
            "--manifest",
            manifest_uri,
            "--domain",
            "fog",
            "--models",
            str(tiny_models_dir),
            *FAST,
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert rc == 1 and (summary["written"], summary["failed"]) == (len(samples) - 1, 1)
    # One error line naming the failed sample and what to do; the JSON line says ok=false.
    lines = err.strip().splitlines()  # the progress bar, then the error line
    line = lines[-1]
    assert [ln for ln in lines if "error:" in ln] == [line]
    assert line.startswith(f"zodi transfer: error: 1 of {len(samples)} images failed (first: ")
    assert bad["sample_id"] in line and "rerun the same command" in line
    assert summary["ok"] is False and summary["exit_code"] == 1
    rows = {
        r["sample_id"]: r
        for r in read_manifest(
            str(tmp_path / "out" / "paired" / "domain=fog" / "paired.parquet")
        ).to_pylist()
    }
    assert rows[bad["sample_id"]]["status"] == "failed"
    assert "label size 20x10 differs from image size 256x128" in rows[bad["sample_id"]]["error"]
    assert rows[bad["sample_id"]]["generated_uri"] is None
    assert sum(r["status"] == "ok" for r in rows.values()) == len(samples) - 1


def test_transfer_manifest_shard_writes_only_its_samples(
    samples_manifest, tiny_components, tmp_path
):
    ids = read_manifest(samples_manifest, "samples").column("sample_id").to_pylist()[:2]
    cfg = TransferConfig.preset("demo", domain="snow", num_inference_steps=2)
    shard_uri = str(tmp_path / "shards" / "snow-0000.parquet")
    result = transfer_manifest(
        samples_manifest,
        cfg,
        str(tmp_path / "out"),
        sample_ids=ids[::-1],
        manifest_uri=shard_uri,
        components=tiny_components,
        progress=False,
    )
    assert (result.written, result.manifest_uri, result.config_digest) == (
        2,
        shard_uri,
        generation_digest(cfg),
    )
    assert [r["sample_id"] for r in read_manifest(shard_uri, "transfer").to_pylist()] == ids[::-1]
    assert len(list((tmp_path / "out" / "images" / "snow").rglob("*.png"))) == 2
    with pytest.raises(ValueError, match="sample_ids: 1 not in the samples manifest: \\['nope'\\]"):
        transfer_manifest(
            samples_manifest,
            cfg,
            str(tmp_path / "out"),
            sample_ids=["nope"],
            components=tiny_components,
            progress=False,
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strength", "1.5"], "--strength: expected a value in (0, 1], received 1.5"),
        (["--prompt", " "], "--prompt: expected a non-empty prompt"),
        (["--steps", "0"], "--steps: expected an integer >= 1, received 0"),
        (["--batch-size", "0"], "--batch-size: expected an integer >= 1, received 0"),
        (
            ["--models", "./no/such/models"],
            "--models: model folder './no/such/models' does not exist",
        ),
        (["--device", "cuda:7"], "device: 'cuda:7' asked for"),
    ],
)
def test_transfer_bad_arguments_exit_2_naming_argument_and_value(
    samples_manifest, tiny_models_dir, tmp_path, capsys, extra, message
):
    argv = [
        "transfer",
        "--manifest",
        samples_manifest,
        "--domain",
        "night",
        "--preset",
        "demo",
        "--models",
        str(tiny_models_dir),
        "--out",
        str(tmp_path),
        *extra,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_transfer_incomplete_model_folder_names_what_is_missing(samples_manifest, tmp_path, capsys):
    models = tmp_path / "models"
    (models / "unet").mkdir(parents=True)
    argv = [
        "transfer",
        "--manifest",
        samples_manifest,
        "--domain",
        "night",
        "--preset",
        "demo",
        "--models",
        str(models),
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "incomplete; missing: unet/config.json" in err and "vae/" in err and "tokenizer/" in err


def test_preview_writes_a_labelled_contact_sheet(synthetic_root, tiny_models_dir, tmp_path, capsys):
    image = next((synthetic_root / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    frame = image.name.removesuffix("_leftImg8bit.png")
    label = next(
        (synthetic_root / "cityscapes" / "gtFine" / "val").rglob(f"{frame}_gtFine_labelIds.png")
    )
    out = tmp_path / "preview.png"
    rc, summary, _ = _run(
        [
            "preview",
            "--image",
            str(image),
            "--label",
            str(label),
            "--domain",
            "night",
            "--strengths",
            "0.5,1.0",
            "--preset",
            "demo",
            "--steps",
            "2",
            "--models",
            str(tiny_models_dir),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert rc == 0 and summary["strengths"] == [0.5, 1.0]
    sheet = np.asarray(Image.open(io.BytesIO(out.read_bytes())).convert("RGB"))
    assert sheet.shape == (64 + 16, 4 * 128, 3)  # caption strip + source | condition | 2 strengths
    tiles = [sheet[16:, i * 128 : (i + 1) * 128] for i in range(4)]
    assert not np.array_equal(tiles[2], tiles[3])  # the two strengths differ
    assert (sheet[:16] < 128).any()  # captions are drawn


def test_preview_rejects_bad_strengths_and_missing_image(tiny_models_dir, tmp_path, capsys):
    base = [
        "preview",
        "--label",
        str(tmp_path / "l.png"),
        "--domain",
        "night",
        "--preset",
        "demo",
        "--models",
        str(tiny_models_dir),
        "--out",
        str(tmp_path / "p.png"),
    ]
    assert main([*base, "--image", str(tmp_path / "x.png"), "--strengths", "0.4,abc"]) == 2
    assert (
        "--strengths: expected comma-separated numbers, received '0.4,abc'"
        in capsys.readouterr().err
    )
    assert main([*base, "--image", str(tmp_path / "x.png"), "--strengths", "0.4,1.3"]) == 2
    assert "--strengths: expected values in (0, 1], received 1.3" in capsys.readouterr().err
    assert main([*base, "--image", str(tmp_path / "x.png")]) == 2
    assert f"--image: '{tmp_path / 'x.png'}' does not exist" in capsys.readouterr().err


def test_tiny_models_command_writes_a_diffusers_folder(tmp_path, capsys):
    rc, summary, _ = _run(["tiny-models", "--out", str(tmp_path / "tiny")], capsys)
    assert rc == 0 and summary["out"] == str(tmp_path / "tiny")
    index = json.loads((tmp_path / "tiny" / "model_index.json").read_text())
    assert index["controlnet"] == ["diffusers", "ControlNetModel"]
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet"):
        assert (tmp_path / "tiny" / sub).is_dir(), sub


def test_zodi_transfer_help_runs_as_a_program():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from zodi_cli import main; sys.exit(main())",
            "transfer",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--manifest" in proc.stdout and "--strength" in proc.stdout


def test_transfer_negative_prompt_option_reaches_the_rows_and_the_digest(
    samples_manifest, tiny_models_dir, tmp_path, capsys
):
    """--negative-prompt '' (what the pocket models need) is recorded per row and is part of the
    generation digest: the images of the default negative prompt are not reused for it."""
    out = tmp_path / "out"
    base = ["transfer", "--manifest", samples_manifest, "--domain", "night", "--models",
            str(tiny_models_dir), *FAST, "--out", str(out)]  # fmt: skip
    assert _run(base, capsys)[0] == 0
    rc, summary, _ = _run(base + ["--negative-prompt", ""], capsys)
    assert rc == 0 and summary["written"] > 0 and summary["skipped"] == 0
    rows = read_manifest(str(out / "paired" / "domain=night" / "paired.parquet"), "transfer")
    assert set(rows.column("negative_prompt").to_pylist()) == {""}
    assert len({p.parent.name for p in (out / "images" / "night").rglob("*.png")}) == 2
