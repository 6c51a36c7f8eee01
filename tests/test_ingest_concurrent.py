"""Two ingests in one process at once (the pipeline ingests its datasets in concurrent tasks): the
first to finish must not break the other's progress bar (tqdm's thread_map deleted tqdm's class
lock on exit: "type object 'tqdm_asyncio' has no attribute '_lock'")."""

from __future__ import annotations

import threading
from pathlib import Path

import tqdm.auto
import tqdm.std

from zodi_core.config import DatasetSpec
from zodi_core.datasets import ingest


def test_an_ingest_that_ends_first_leaves_the_other_running(synthetic_root, tmp_path, monkeypatch):
    # A fresh process holds no tqdm lock yet; earlier tests in this one may have made it.
    for cls in (tqdm.std.tqdm, tqdm.auto.tqdm):
        monkeypatch.delattr(cls, "_lock", raising=False)
    b_started, a_done = threading.Event(), threading.Event()
    real = ingest.check_sample

    def check(candidate, scan):
        # A (val) waits until B (train) is mid-run; B goes on only after A has returned.
        if "/val/" in str(candidate.image_path):
            assert b_started.wait(60)
        else:
            b_started.set()
            assert a_done.wait(60)
        return real(candidate, scan)

    monkeypatch.setattr(ingest, "check_sample", check)
    root = Path(synthetic_root) / "cityscapes"
    results, errors = {}, []

    def run(split: str) -> None:
        try:
            spec = DatasetSpec(dataset="cityscapes", root=str(root), split=split)
            out = tmp_path / f"{split}.parquet"
            results[split] = ingest.ingest_dataset(spec, str(out), workers=1, progress=True)
        except Exception as err:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(f"{split}: {type(err).__name__}: {err}")

    a = threading.Thread(target=run, args=("val",))
    b = threading.Thread(target=run, args=("train",))
    a.start()
    b.start()
    a.join(120)
    a_done.set()
    b.join(120)
    assert errors == []
    assert (results["val"].n_samples, results["train"].n_samples) == (4, 8)
