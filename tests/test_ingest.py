"""Ingestion: dataset folder → validated samples manifest; every bad-input case; the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zodi_cli import main
from zodi_core import manifest
from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import IngestError, ingest_dataset, rejects_uri_for


def _spec(root: Path, dataset: str = "cityscapes", **kw) -> DatasetSpec:
    sub = {"cityscapes": "cityscapes", "acdc": "acdc", "gta5": "gta5"}[dataset]
    return DatasetSpec(dataset=dataset, root=str(root / sub), **kw)


def _cs_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, label) of the Cityscapes train frames, sorted by frame id."""
    images = sorted((root / "cityscapes/leftImg8bit/train").rglob("*.png"), key=lambda p: p.name)
    return [
        (
            p,
            root / "cityscapes/gtFine/train" / p.parent.name
            / p.name.replace("_leftImg8bit", "_gtFine_labelIds"),
        )
        for p in images
    ]  # fmt: skip


def _save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _ingest_fails(spec: DatasetSpec, out: Path) -> list[str]:
    with pytest.raises(IngestError) as info:
        ingest_dataset(spec, str(out), progress=False)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temporary left over
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("dataset", "kw", "n", "domain", "label_format"),
    [
        ("cityscapes", {"split": "train"}, 8, "source", "label_ids"),
        ("cityscapes", {"split": "val"}, 4, "source", "label_ids"),
        ("acdc", {"split": "val", "condition": "snow"}, 4, "snow", "train_ids"),
        ("gta5", {"subset": 5, "subset_seed": 1}, 5, "game", "label_ids"),
    ],
)
def test_ingest_dataset_writes_sorted_checked_rows(
    synthetic_root, tmp_path, dataset, kw, n, domain, label_format
):
    out = tmp_path / "out/m.parquet"
    result = ingest_dataset(_spec(synthetic_root, dataset, **kw), str(out), progress=False)
    assert (result.manifest_uri, result.n_samples, result.rejects) == (str(out), n, [])
    table = manifest.read_manifest(str(out), "samples")
    rows = table.to_pylist()
    assert [r["sample_id"] for r in rows] == sorted(r["sample_id"] for r in rows)
    assert len(rows) == n
    for r in rows:
        assert (r["dataset"], r["domain"], r["label_format"]) == (dataset, domain, label_format)
        image, label = Path(r["image_uri"]), Path(r["label_uri"])
        assert image.is_absolute() and r["sample_id"] in image.name
        assert r["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        assert r["label_sha256"] == hashlib.sha256(label.read_bytes()).hexdigest()
        assert (r["width"], r["height"]) == Image.open(image).size
    spec = json.loads(manifest.manifest_metadata(table)["dataset_spec"])
    assert spec["dataset"] == dataset and spec["root"] == str(synthetic_root / dataset)


def test_ingest_dataset_is_the_same_with_one_or_many_workers(synthetic_root, tmp_path):
    spec = _spec(synthetic_root)
    one = ingest_dataset(spec, str(tmp_path / "a.parquet"), workers=1, progress=False)
    two = ingest_dataset(spec, str(tmp_path / "b.parquet"), workers=2, progress=False)
    assert manifest.read_manifest(one.manifest_uri).equals(manifest.read_manifest(two.manifest_uri))


def test_ingest_image_without_label(synthetic_copy, tmp_path):
    image, label = _cs_pairs(synthetic_copy)[3]
    label.unlink()
    assert _ingest_fails(_spec(synthetic_copy), tmp_path / "out/m.parquet") == [
        f"{image}: image without label (expected {label})"
    ]


def test_ingest_label_without_image(synthetic_copy, tmp_path):
    image, label = _cs_pairs(synthetic_copy)[0]
    image.unlink()
    assert _ingest_fails(_spec(synthetic_copy), tmp_path / "out/m.parquet") == [
        f"{label}: label without image (expected {image})"
    ]


def test_ingest_size_mismatch(synthetic_copy, tmp_path):
    image, label = _cs_pairs(synthetic_copy)[1]
    with Image.open(label) as im:
        im.resize((128, 64), Image.NEAREST).save(label)
    assert _ingest_fails(_spec(synthetic_copy), tmp_path / "out/m.parquet") == [
        f"{label}: size 128x64 does not match its image {image} (256x128)"
    ]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_ingest_corrupt_or_truncated_png(synthetic_copy, tmp_path, damage):
    image, _ = _cs_pairs(synthetic_copy)[2]
    data = image.read_bytes()
    image.write_bytes(b"not a png at all" if damage == "garbage" else data[: len(data) // 2])
    [line] = _ingest_fails(_spec(synthetic_copy), tmp_path / "out/m.parquet")
    assert line.startswith(f"{image}: corrupt or truncated image (")


def test_ingest_label_ids_outside_the_table(synthetic_copy, tmp_path):
    _, label = _cs_pairs(synthetic_copy)[0]
    ids = np.asarray(Image.open(label)).copy()
    ids[:2, :2] = 40
    _save(label, ids)
    assert _ingest_fails(_spec(synthetic_copy), tmp_path / "out/m.parquet") == [
        f"{label}: label ids outside the table: [40]"
    ]


def test_ingest_acdc_train_ids_outside_the_table(synthetic_copy, tmp_path):
    gt = sorted((synthetic_copy / "acdc/gt/night/val").rglob("*.png"))[1]
    ids = np.asarray(Image.open(gt)).copy()
    ids[0, 0] = 19
    _save(gt, ids)
    spec = _spec(synthetic_copy, "acdc", split="val", condition="night")
    assert _ingest_fails(spec, tmp_path / "out/m.parquet") == [
        f"{gt}: train ids outside 0..18 and 255: [19]"
    ]


def test_ingest_rgb_label_is_rejected(synthetic_copy, tmp_path):
    _, label = _cs_pairs(synthetic_copy)[0]
    _save(label, np.zeros((128, 256, 3), dtype=np.uint8))
    [line] = _ingest_fails(_spec(synthetic_copy), tmp_path / "out/m.parquet")
    assert line == f"{label}: expected a single-channel label map, found shape (128, 256, 3)"


def test_ingest_empty_folder(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / "gta5" / sub).mkdir(parents=True)
    [line] = _ingest_fails(_spec(tmp_path, "gta5"), tmp_path / "out/m.parquet")
    assert line.startswith(f"{tmp_path}/gta5/images: empty folder")


def test_ingest_wrong_layout_says_what_was_expected(synthetic_root, tmp_path):
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "acdc"))
    lines = _ingest_fails(spec, tmp_path / "out/m.parquet")
    assert lines[0].startswith(f"{synthetic_root}/acdc/gtFine/train: wrong layout")
    assert lines[1].startswith(f"{synthetic_root}/acdc/leftImg8bit/train: wrong layout")
    assert (
        "expected <root>/leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png" in lines[1]
    )


def test_ingest_reports_every_bad_file(synthetic_copy, tmp_path):
    pairs = _cs_pairs(synthetic_copy)
    pairs[0][0].write_bytes(b"junk")  # corrupt image
    pairs[0][1].write_bytes(b"junk")  # and its label: both are named
    pairs[4][1].unlink()
    pairs[6][0].write_bytes(pairs[6][0].read_bytes()[:100])
    lines = _ingest_fails(_spec(synthetic_copy), tmp_path / "out/m.parquet")
    named = sorted(line.split(": ", 1)[0] for line in lines)
    assert named == sorted(str(p) for p in (pairs[0][0], pairs[0][1], pairs[4][0], pairs[6][0]))


def test_ingest_failure_leaves_an_existing_manifest_untouched(synthetic_copy, tmp_path):
    out = tmp_path / "out/m.parquet"
    ingest_dataset(_spec(synthetic_copy), str(out), progress=False)
    before = out.read_bytes()
    _cs_pairs(synthetic_copy)[5][0].write_bytes(b"junk")
    with pytest.raises(IngestError):
        ingest_dataset(_spec(synthetic_copy), str(out), progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.parquet"]


def test_ingest_skip_invalid_writes_good_rows_and_rejects(synthetic_copy, tmp_path):
    pairs = _cs_pairs(synthetic_copy)
    pairs[1][0].write_bytes(b"junk")
    pairs[2][1].unlink()
    out = tmp_path / "out/m.parquet"
    result = ingest_dataset(_spec(synthetic_copy), str(out), skip_invalid=True, progress=False)
    assert result.n_samples == 6
    assert (
        result.rejects_uri == str(tmp_path / "out/m.rejects.parquet") == rejects_uri_for(str(out))
    )
    ids = manifest.read_manifest(str(out), "samples").column("sample_id").to_pylist()
    bad = {
        pairs[1][0].name.removesuffix("_leftImg8bit.png"),
        pairs[2][0].name.removesuffix("_leftImg8bit.png"),
    }
    assert len(ids) == 6 and not bad & set(ids)
    rejects = manifest.read_manifest(result.rejects_uri, "rejects").to_pylist()
    assert [r["path"] for r in rejects] == sorted([str(pairs[1][0]), str(pairs[2][0])])
    assert {r["reason"].split(" (")[0] for r in rejects} == {
        "corrupt or truncated image", "image without label"
    }  # fmt: skip
    # A later clean run without --skip-invalid removes the stale rejects list.
    pairs[1][0].write_bytes(pairs[0][0].read_bytes())
    pairs[2][1].write_bytes(pairs[0][1].read_bytes())
    ingest_dataset(_spec(synthetic_copy), str(out), progress=False)
    assert not Path(result.rejects_uri).exists()


def test_ingest_skip_invalid_with_nothing_valid_still_fails(synthetic_copy, tmp_path):
    for image, _ in _cs_pairs(synthetic_copy):
        image.write_bytes(b"junk")
    with pytest.raises(IngestError, match="no valid sample"):
        ingest_dataset(
            _spec(synthetic_copy),
            str(tmp_path / "out/m.parquet"),
            skip_invalid=True,
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_cli_ingest_writes_manifest_and_json(synthetic_root, tmp_path, capsys):
    out = tmp_path / "night.parquet"
    code = main(
        ["ingest", "--dataset", "acdc", "--root", str(synthetic_root / "acdc"), "--split", "val",
         "--condition", "night", "--out", str(out), "--workers", "2", "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary == {
        "command": "ingest", "ok": True, "manifest": str(out), "samples": 4, "rejected": 0,
        "rejects_uri": None, "seconds": summary["seconds"],
    }  # fmt: skip
    assert "ingest acdc-night-val" in captured.err  # the tqdm bar
    assert manifest.read_manifest(str(out)).num_rows == 4


def test_cli_ingest_corrupt_png_exits_nonzero_naming_the_file(synthetic_copy, tmp_path, capsys):
    image, _ = _cs_pairs(synthetic_copy)[0]
    image.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out/m.parquet"
    code = main(
        ["ingest", "--dataset", "cityscapes", "--root", str(synthetic_copy / "cityscapes"),
         "--out", str(out), "--no-progress", "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and not out.exists()
    err = captured.err.strip().splitlines()
    assert err[0].startswith(f"{image}: corrupt or truncated image")
    assert err[1].startswith("zodi ingest: error: 1 problem(s) in cityscapes")
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["ok"] is False and summary["rejects"] == [err[0]]


def test_cli_ingest_skip_invalid_says_where_rejects_are(synthetic_copy, tmp_path, capsys):
    _, label = _cs_pairs(synthetic_copy)[3]
    label.unlink()
    out = tmp_path / "out/m.parquet"
    code = main(
        ["ingest", "--dataset", "cityscapes", "--root", str(synthetic_copy / "cityscapes"),
         "--out", str(out), "--skip-invalid", "--no-progress", "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["samples"], summary["rejected"]) == (7, 1)
    assert f"wrote {tmp_path / 'out/m.rejects.parquet'} (1 rejected)" in captured.err


def test_cli_ingest_subprocess_exit_code(synthetic_copy, tmp_path):
    """The installed entry point: exit status and the one-line reason, from a real process."""
    image, _ = _cs_pairs(synthetic_copy)[4]
    image.write_bytes(image.read_bytes()[:-200])
    out = tmp_path / "out/m.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from zodi_cli import main; sys.exit(main())",
         "ingest", "--dataset", "cityscapes", "--root", str(synthetic_copy / "cityscapes"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"{image}: corrupt or truncated image" in proc.stderr
    assert not out.exists()


def test_ingest_refuses_a_remote_root(tmp_path):
    spec = DatasetSpec(dataset="gta5", root="s3://bucket/gta5")
    with pytest.raises(ValueError, match="root: expected a local dataset folder"):
        ingest_dataset(spec, str(tmp_path / "m.parquet"), progress=False)


# --- sample ids and the ACDC condition ---------------------------------------------------------


def _rename_gta5(root: Path, old: str, new: str) -> Path:
    for folder in ("images", "labels"):
        (root / "gta5" / folder / f"{old}.png").rename(root / "gta5" / folder / f"{new}.png")
    return root / "gta5" / "images" / f"{new}.png"


BAD_IDS = {  # id (a file name on disk) → the reason ingestion gives
    "a..b": "contains '..'",
    "back\\slash": "contains a path separator",
    "bell\x07": "contains a control character",
}


def test_ingest_bad_sample_ids_reject_only_their_sample(synthetic_copy, tmp_path):
    bad = {
        _rename_gta5(synthetic_copy, f"{i:05d}", sid): reason
        for i, (sid, reason) in enumerate(BAD_IDS.items(), start=1)
    }
    _rename_gta5(synthetic_copy, "00004", "a:b")  # ':' and the like are fine
    out = tmp_path / "out/m.parquet"

    # Without --skip-invalid: one line per bad file, nothing written.
    lines = _ingest_fails(_spec(synthetic_copy, "gta5"), out)
    assert len(lines) == len(BAD_IDS)
    for image, reason in bad.items():
        (line,) = [x for x in lines if x.startswith(f"{image}: ")]
        assert reason in line and "rename the file" in line

    # With it: the five good samples (a:b among them) and the three bad ids in the rejects.
    result = ingest_dataset(
        _spec(synthetic_copy, "gta5"), str(out), skip_invalid=True, progress=False
    )
    ids = manifest.read_manifest(str(out), "samples").column("sample_id").to_pylist()
    assert ids == ["00005", "00006", "00007", "00008", "a:b"]
    rejects = manifest.read_manifest(result.rejects_uri, "rejects").to_pylist()
    assert sorted(r["path"] for r in rejects) == sorted(str(image) for image in bad)
    for r in rejects:
        assert bad[Path(r["path"])] in r["reason"]


def test_sample_id_with_a_colon_is_a_valid_storage_key(tmp_path):
    from zodi_core import storage

    store = storage.open_storage(tmp_path)
    uri = store.put_bytes("images/night/a:b.png", b"png")
    assert storage.join_uri(str(tmp_path), "a:b.png") == f"{tmp_path}/a:b.png"
    assert Path(uri).read_bytes() == b"png"
    with pytest.raises(storage.StorageError, match="absolute"):
        store.put_bytes("C:/x.png", b"no")


@pytest.mark.parametrize("condition", [None, "dusk", "../night"])
def test_acdc_condition_is_one_of_the_acdc_conditions(synthetic_root, condition):
    with pytest.raises(
        ValueError, match=r"condition: expected one of 'night', 'snow', 'rain' or 'fog'"
    ):
        _spec(synthetic_root, "acdc", split="val", condition=condition)
