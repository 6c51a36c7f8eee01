"""The CLI's one-line error carries the notes an exception was given (``add_note``): the
transfer names there the file a storage error is about when its message does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from zodi_cli import main
from zodi_cli._common import message_lines
from zodi_core import storage
from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import ingest_dataset
from zodi_core.storage.local import LocalStorage


def test_message_lines_appends_notes_after_the_message():
    err = OSError("disk gone")
    assert message_lines(err) == ["OSError: disk gone"]  # no notes: as before
    err.add_note("while writing /out/a.png")
    err.add_note("  ")  # a blank note adds no line
    assert message_lines(err) == ["OSError: disk gone", "while writing /out/a.png"]
    empty = RuntimeError()
    empty.add_note("while reading /in/b.png")
    assert message_lines(empty) == ["RuntimeError", "while reading /in/b.png"]


@pytest.fixture(scope="module")
def samples_manifest(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("notes") / "cityscapes-val.parquet"
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="val")
    ingest_dataset(spec, str(out), progress=False)
    return str(out)


def test_zodi_transfer_error_line_names_the_file_a_storage_fault_hit(
    samples_manifest, tiny_models_dir, tmp_path, capsys, monkeypatch
):
    """A write that fails with a message naming no file (a dropped connection): the one error
    line of ``zodi transfer`` still names the image it was writing."""
    real_put = LocalStorage.put_bytes
    failed: list[str] = []

    def faulty(store, key, data):
        if key.endswith(".png") and not failed:
            failed.append(store.uri(key))
            raise storage.TransientStorageError("connection reset by peer")
        return real_put(store, key, data)

    monkeypatch.setattr(LocalStorage, "put_bytes", faulty)
    rc = main([
        "transfer", "--manifest", samples_manifest, "--domain", "night",
        "--models", str(tiny_models_dir), "--preset", "demo", "--steps", "2",
        "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("zodi transfer: error:")]
    assert rc == 1
    assert "connection reset by peer" in line and failed and failed[0] in line
