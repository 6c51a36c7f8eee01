"""Benchmark: what "storage is the truth" costs on a fully cached rerun.

Before a cached transfer shard counts, the flow reads its cache record and checks that its shard
manifest and every image it lists exist (``tasks.transfer.check_cached_shards`` →
``zodi_core.sharding.missing_outputs``: one listing per image folder). This builds the outputs of
a cached run — ``--images`` generated images in shards of ``--shard-size`` with their shard
manifests and Prefect cache records, on local disk — and times that whole check.

Run: ``python bench/rerun_checks.py [--images 3000] [--shard-size 8] [--repeat 3]``.
Prints one line per measurement and a JSON summary; figures are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def build_outputs(root: Path, n_images: int, shard_size: int):
    """A cached run's outputs: images, shard manifests; return (shards, config)."""
    from zodi_core import layout, manifest, storage
    from zodi_core.config import TransferConfig
    from zodi_core.sharding import ShardRef, shard_manifest_uri
    from zodi_core.transfer.lineage import generation_digest

    config = TransferConfig.preset(
        "demo",
        models={"base": "org/model", "controlnet": None, "revision": "0" * 40},
    )  # a pinned commit: the fingerprint asks no hub
    digest = generation_digest(config)
    store = storage.open_storage(str(root))
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 2048  # size does not matter to an existence check
    ids = [f"city_{i // 1000:06d}_{i % 1000:06d}" for i in range(n_images)]
    shards = []
    for index, start in enumerate(range(0, n_images, shard_size)):
        part = ids[start : start + shard_size]
        shard = ShardRef(index, "samples.parquet", tuple(part), f"{index:016x}")
        rows = []
        for sid in part:
            key = layout.generated_image_key(config.domain, digest, sid)
            rows.append(
                {
                    "sample_id": sid,
                    "domain": config.domain,
                    "source_uri": f"/data/{sid}.png",
                    "label_uri": f"/data/{sid}_labelIds.png",
                    "label_format": "label_ids",
                    "generated_uri": store.put_bytes(key, png),
                    "prompt": config.effective_prompt,
                    "negative_prompt": config.negative_prompt,
                    "strength": config.effective_strength,
                    "seed": 0,
                    "k": 2,
                    "first_timestep": 501,
                    "palette": config.palette,
                    "method": config.method,
                    "model_revisions": "{}",
                    "config_digest": digest,
                    "status": "ok",
                    "error": None,
                    "seconds": 0.1,
                }
            )
        manifest.write_manifest(
            rows, shard_manifest_uri(str(root), shard, config, digest), "transfer"
        )
        shards.append(shard)
    return shards, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["PREFECT_HOME"] = str(tmp_path / "prefect")
        os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(tmp_path / "prefect" / "results")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        from prefect.results import get_result_store

        from tasks.transfer import _shard_cache_key, check_cached_shards, transfer_shard_task
        from zodi_core.sharding import missing_outputs, shard_manifest_uri

        root = tmp_path / "artifacts"
        t0 = time.perf_counter()
        shards, config = build_outputs(root, args.images, args.shard_size)
        # the cache records a completed run leaves (one per shard)
        records = get_result_store().update_for_task(transfer_shard_task)
        for shard in shards:
            params = {"shard": shard, "config": config, "out_root": str(root)}
            uri = shard_manifest_uri(str(root), shard, config)
            records.write(
                {"manifest": uri, "written": len(shard.sample_ids)},
                key=_shard_cache_key(None, params),
            )
        print(
            f"built {args.images} images in {len(shards)} shards: {time.perf_counter() - t0:.1f} s"
        )

        uris = [shard_manifest_uri(str(root), s, config) for s in shards]
        storage_s, full_s = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            assert missing_outputs(uris) == {}
            storage_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert check_cached_shards(shards, config, str(root))[1] == set()
            full_s.append(time.perf_counter() - t)
        summary = {
            "images": args.images,
            "shards": len(shards),
            "storage_check_s": round(min(storage_s), 3),
            "records_plus_storage_check_s": round(min(full_s), 3),
        }
        print(
            f"storage check (manifests + one listing per folder): {summary['storage_check_s']:.3f} s"
        )
        print(
            "cache records + storage check (check_cached_shards): "
            f"{summary['records_plus_storage_check_s']:.3f} s"
        )
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
