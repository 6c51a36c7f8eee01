"""The overlapped runner: the loader and writer threads run beside the model, write the same
bytes as the serial loop (and as the sampler on the raw sources), stay bounded, and an error in
any of the three stops the transfer with what was written counted and the file named."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fixtures_models import tiny_transfer_config
from PIL import Image

from zodi_core import manifest, storage
from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import ingest_dataset
from zodi_core.datasets.io import read_image, read_label
from zodi_core.storage.local import LocalStorage
from zodi_core.transfer import runner
from zodi_core.transfer.runner import partial_counts, transfer_manifest
from zodi_core.transfer.sampler import TransferSampler


@pytest.fixture(scope="module")
def samples_table(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The 8 synthetic Cityscapes train samples (256x128)."""
    out = tmp_path_factory.mktemp("overlap") / "cityscapes-train.parquet"
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="train")
    ingest_dataset(spec, str(out), progress=False)
    return manifest.read_manifest(str(out), "samples")


def _repeated(table, times: int):
    """The samples ``times`` over under new ids (same files): a longer shard."""
    rows = [
        {**r, "sample_id": f"{r['sample_id']}-{k}"} for k in range(times) for r in table.to_pylist()
    ]
    return pa.Table.from_pylist(rows, schema=manifest.SAMPLE_SCHEMA)


def _images(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "images").rglob("*.png"))}


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("resize_to_source", [False, True])
def test_overlapped_transfer_writes_the_bytes_of_the_serial_loop_and_the_sampler(
    samples_table, tiny_models_dir, tiny_components, tmp_path, resize_to_source
):
    config = tiny_transfer_config(tiny_models_dir, resize_to_source=resize_to_source)
    results = {
        mode: transfer_manifest(
            samples_table,
            config,
            str(tmp_path / mode),
            components=tiny_components,
            progress=False,
            overlap=mode == "overlapped",
        )
        for mode in ("serial", "overlapped")
    }
    serial, overlapped = _images(tmp_path / "serial"), _images(tmp_path / "overlapped")
    assert len(serial) == samples_table.num_rows and serial == overlapped
    # the same rows, in the samples' order, with the integrity of the stored bytes
    volatile = ("generated_uri", "seconds")
    rows = {m: [{k: v for k, v in r.items() if k not in volatile} for r in res.rows]
            for m, res in results.items()}  # fmt: skip
    assert rows["serial"] == rows["overlapped"]
    assert [r["sample_id"] for r in results["overlapped"].rows] == samples_table.column(
        "sample_id"
    ).to_pylist()
    for row in results["overlapped"].rows:
        data = Path(row["generated_uri"]).read_bytes()
        assert (row["image_bytes"], row["image_sha256"]) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
    # and the pixels are the sampler's own, given the raw sources (it resizes them itself)
    sources = samples_table.to_pylist()
    reference = TransferSampler(tiny_components, config)(
        [read_image(r["image_uri"]) for r in sources],
        [read_label(r["label_uri"], r["label_format"]) for r in sources],
        [r["sample_id"] for r in sources],
    )
    by_id = {r["sample_id"]: r for r in results["overlapped"].rows}
    for source, out in zip(sources, reference, strict=True):
        row = by_id[source["sample_id"]]
        image = _decode(Path(row["generated_uri"]).read_bytes())
        np.testing.assert_array_equal(image, out.image)
        expected = (128, 256, 3) if resize_to_source else (64, 128, 3)
        assert image.shape == expected


class _Probe:
    """Slow, instrumented I/O and model: each stage sleeps ``delay`` per image (the writers are
    two, so each stage takes about ``2 · delay`` per batch of two) and counts what is in memory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float, write_delay: float) -> None:
        self.lock = threading.Lock()
        self.reads = self.sampled = self.written = 0
        self.max_read_ahead = self.max_unwritten = 0
        # (start, end) of every read, model call and image write, on one clock
        self.spans: dict[str, list[tuple[float, float]]] = {"load": [], "model": [], "write": []}
        real_read, real_call = runner.read_image, TransferSampler.__call__
        real_put = LocalStorage.put_bytes
        probe = self

        def read_image_slow(uri, **kw):
            t0 = time.perf_counter()
            time.sleep(delay)
            out = real_read(uri, **kw)
            with probe.lock:
                probe.reads += 1
                probe.spans["load"].append((t0, time.perf_counter()))
            return out

        def call_slow(sampler, images, labels, ids, config=None):
            t0 = time.perf_counter()
            with probe.lock:
                probe.sampled += len(images)
                probe.max_read_ahead = max(probe.max_read_ahead, probe.reads - probe.sampled)
            time.sleep(delay * len(images))
            out = real_call(sampler, images, labels, ids, config)
            with probe.lock:
                probe.max_unwritten = max(probe.max_unwritten, probe.sampled - probe.written)
                probe.spans["model"].append((t0, time.perf_counter()))
            return out

        def put_slow(store, key, data):
            if not key.endswith(".png"):
                return real_put(store, key, data)
            t0 = time.perf_counter()
            time.sleep(write_delay)
            uri = real_put(store, key, data)
            with probe.lock:
                probe.written += 1
                probe.spans["write"].append((t0, time.perf_counter()))
            return uri

        monkeypatch.setattr(runner, "read_image", read_image_slow)
        monkeypatch.setattr(TransferSampler, "__call__", call_slow)
        monkeypatch.setattr(LocalStorage, "put_bytes", put_slow)


def _beside_the_model(spans: dict[str, list[tuple[float, float]]], stage: str) -> float:
    """The fraction of ``stage``'s time spent while a model call was running (the model calls
    never overlap each other: one model)."""
    total = beside = 0.0
    for a, b in spans[stage]:
        total += b - a
        beside += sum(max(0.0, min(b, d) - max(a, c)) for c, d in spans["model"])
    return beside / total


def test_loader_and_writers_run_beside_the_model(
    samples_table, tiny_models_dir, tiny_components, tmp_path, monkeypatch
):
    # Each stage sleeps ~0.2 s a batch. What is asserted is where the reads and writes happen
    # (beside a model call, or between model calls) on the stages' own clock, not wall-time
    # ratios: those depend on the machine's load (a 2-core CI box with the model's real compute
    # beside the sleeps), the overlap does not.
    table = _repeated(samples_table, 2)  # 16 images, 8 batches
    config = tiny_transfer_config(tiny_models_dir)
    beside, busy = {}, {}
    for mode in ("serial", "overlapped"):
        probe = _Probe(monkeypatch, delay=0.1, write_delay=0.2)
        result = transfer_manifest(
            table,
            config,
            str(tmp_path / mode),
            components=tiny_components,
            progress=False,
            overlap=mode == "overlapped",
        )
        monkeypatch.undo()
        assert result.written == table.num_rows
        assert [len(probe.spans[k]) for k in ("load", "model", "write")] == [16, 8, 16]
        beside[mode] = {k: _beside_the_model(probe.spans, k) for k in ("load", "write")}
        busy[mode] = result.timings["model"] / result.timings["wall"]
    # serial: every read and write happens between model calls
    assert beside["serial"] == {"load": 0.0, "write": 0.0}, beside
    # overlapped: batch i+1 is read and batch i-1 written while batch i is on the model; only
    # the first batch's reads and the last batch's writes cannot be (1/8 each: ideal 7/8)
    assert min(beside["overlapped"].values()) > 0.6, beside
    # and the runner's own timings say the same: the model waits less for I/O
    assert busy["overlapped"] > busy["serial"], busy


def test_overlap_is_bounded_one_batch_ahead_and_a_few_behind(
    samples_table, tiny_models_dir, tiny_components, tmp_path, monkeypatch
):
    # writers far slower than the model: the model must wait, not pile outputs up in memory
    probe = _Probe(monkeypatch, delay=0.0, write_delay=0.5)
    config = tiny_transfer_config(tiny_models_dir)
    result = transfer_manifest(
        samples_table, config, str(tmp_path / "out"), components=tiny_components, progress=False
    )
    assert result.written == samples_table.num_rows
    batch = config.batch_size
    # loaded but not yet on the model: at most the next batch
    assert probe.max_read_ahead <= batch
    # generated but not yet stored: the writers' WRITE_AHEAD batches and the one just made
    assert probe.max_unwritten <= (runner.WRITE_AHEAD + 1) * batch
    assert probe.max_unwritten > batch  # the writers really lagged (the bound was exercised)


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("where", ["loader", "model", "writer"])
def test_an_error_in_any_stage_stops_with_what_was_written_counted_and_the_file_named(
    samples_table, tiny_models_dir, tiny_components, tmp_path, monkeypatch, where, overlap
):
    ids = samples_table.column("sample_id").to_pylist()  # batches of 2: the 5th is batch 3
    victim = samples_table.to_pylist()[4]
    if where == "loader":
        real = runner.read_image

        def faulty(uri, **kw):
            if uri == victim["image_uri"]:
                raise storage.TransientStorageError("connection reset by peer")
            return real(uri, **kw)

        monkeypatch.setattr(runner, "read_image", faulty)
    elif where == "model":
        real_call = TransferSampler.__call__

        def faulty(sampler, images, labels, sample_ids, config=None):
            if victim["sample_id"] in sample_ids:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return real_call(sampler, images, labels, sample_ids, config)

        monkeypatch.setattr(TransferSampler, "__call__", faulty)
    else:
        real_put = LocalStorage.put_bytes

        def faulty(store, key, data):
            if key.endswith(f"/{victim['sample_id']}.png"):
                raise storage.TransientStorageError("connection reset by peer")
            return real_put(store, key, data)

        monkeypatch.setattr(LocalStorage, "put_bytes", faulty)
    out = tmp_path / "out"
    config = tiny_transfer_config(tiny_models_dir)
    expected = storage.TransientStorageError if where != "model" else RuntimeError
    with pytest.raises(expected) as info:
        transfer_manifest(
            samples_table, config, str(out), components=tiny_components, progress=False,
            overlap=overlap,
        )  # fmt: skip
    on_disk = _images(out)
    # every image written before the error is whole, and counted
    assert partial_counts(info.value)["written"] == len(on_disk)
    assert all(_decode(data).shape == (64, 128, 3) for data in on_disk.values())
    if where == "writer":  # all but the victim, or fewer: the model stops soon after
        assert {f"{i}.png" for i in ids[:4] + ids[5:6]} <= set(on_disk)
        assert f"{victim['sample_id']}.png" not in on_disk
    else:  # batches 1 and 2 (batch 3 never reached storage)
        assert sorted(on_disk) == sorted(f"{i}.png" for i in ids[:4])
    if where != "model":
        notes = " ".join(getattr(info.value, "__notes__", []))
        named = victim["image_uri"] if where == "loader" else f"/{victim['sample_id']}.png"
        assert named in notes
    # a rerun skips what was written and completes the rest
    monkeypatch.undo()
    result = transfer_manifest(
        samples_table, config, str(out), components=tiny_components, progress=False
    )
    assert (result.skipped, result.written) == (len(on_disk), len(ids) - len(on_disk))
