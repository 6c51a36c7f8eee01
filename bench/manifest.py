"""Benchmark: samples-manifest write/read throughput and ingestion throughput.

Run: ``python bench/manifest.py [--rows 1000000] [--images 200] [--size 256x128] [--workers 1 2]``.
Uses a temporary
folder on local storage; prints one line per measurement and a JSON summary at the end. Figures
are recorded in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from zodi_core import manifest
from zodi_core.config import DatasetSpec
from zodi_core.datasets.ingest import ingest_dataset
from zodi_core.datasets.synth import cityscapes_palette, write_synthetic


def _samples_table(n: int, seed: int = 0) -> pa.Table:
    """A realistic ``samples`` table of ``n`` rows (Cityscapes-like paths, random digests)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    ids = [f"city{i % 50:02d}_{i // 1000:06d}_{i % 1000:06d}" for i in idx]
    digests = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    columns = {
        "sample_id": ids,
        "dataset": ["cityscapes"] * n,
        "split": ["train"] * n,
        "domain": ["source"] * n,
        "image_uri": [f"s3://bucket/cityscapes/leftImg8bit/train/{s}_leftImg8bit.png" for s in ids],
        "label_uri": [f"s3://bucket/cityscapes/gtFine/train/{s}_gtFine_labelIds.png" for s in ids],
        "label_format": ["label_ids"] * n,
        "width": np.full(n, 2048, dtype=np.int32),
        "height": np.full(n, 1024, dtype=np.int32),
        "image_sha256": [f"{a:016x}" * 4 for a in digests[:, 0]],
        "label_sha256": [f"{b:016x}" * 4 for b in digests[:, 1]],
    }
    return pa.table(columns, schema=manifest.SAMPLE_SCHEMA)


def _best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_manifest(tmp: Path, rows: int, repeat: int) -> dict[str, float]:
    table = _samples_table(rows)
    uri = str(tmp / "samples.parquet")
    t_write = _best_of(lambda: manifest.write_manifest(table, uri, "samples"), repeat)
    t_read = _best_of(lambda: manifest.read_manifest(uri, "samples"), repeat)
    size_mb = os.path.getsize(uri) / 1e6
    print(f"manifest write: {rows:,} rows in {t_write:.2f} s = {rows / t_write:,.0f} rows/s")
    print(f"manifest read:  {rows:,} rows in {t_read:.2f} s = {rows / t_read:,.0f} rows/s")
    print(f"manifest size:  {size_mb:.1f} MB ({size_mb * 1e6 / rows:.0f} B/row, zstd)")
    return {
        "rows": rows,
        "write_rows_per_s": rows / t_write,
        "read_rows_per_s": rows / t_read,
        "file_mb": size_mb,
    }


def bench_ingest(
    tmp: Path, images: int, size: tuple[int, int], workers: list[int], repeat: int
) -> dict[str, float]:
    cityscapes_palette()  # the one-off mmseg import is not part of the generator's speed
    start = time.perf_counter()
    roots = write_synthetic(
        tmp / "synth", seed=0, size=size, n_train=images, n_val=0, n_target=0, n_gta=0
    )
    t_synth = time.perf_counter() - start
    label = f"{size[0]}x{size[1]}"
    print(f"synth:  {images} Cityscapes frames ({label}) in {t_synth:.2f} s "
          f"= {images / t_synth:,.0f} frames/s (image + labelIds + colour PNGs)")  # fmt: skip
    spec = DatasetSpec(dataset="cityscapes", root=roots["cityscapes"], split="train")
    out: dict[str, float] = {
        "images": images,
        "size": label,
        "synth_frames_per_s": images / t_synth,
    }
    for n in workers:
        t = _best_of(
            lambda n=n: ingest_dataset(
                spec, str(tmp / f"in{n}.parquet"), workers=n, progress=False
            ),
            repeat,
        )
        print(
            f"ingest: {images} images ({label}), {n} worker(s): {t:.2f} s = {images / t:,.0f} images/s"
        )
        out[f"ingest_images_per_s_workers{n}"] = images / t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="manifest rows")
    parser.add_argument("--images", type=int, default=200, help="synthetic images to ingest")
    parser.add_argument("--size", default="256x128", help="WIDTHxHEIGHT of the images")
    parser.add_argument("--skip-manifest", action="store_true", help="ingestion only")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory(prefix="zodi-bench-") as tmp:
        size = tuple(int(v) for v in args.size.split("x"))
        result = {}
        if not args.skip_manifest:
            result["manifest"] = bench_manifest(Path(tmp), args.rows, args.repeat)
        result["ingest"] = bench_ingest(Path(tmp), args.images, size, args.workers, args.repeat)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
