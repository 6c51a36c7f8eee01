"""Orchestration overhead and failed-shard rerun cost, on synthetic data and tiny models.

Prints:
1. wall time of the sharded transfer as a Prefect flow vs. the same shards through zodi_core
   directly (ratio; target <= 1.10 on the demo), Prefect's ephemeral server start excluded
   (it is reported separately);
2. wall time of a rerun after one failed shard out of N vs. a full run (target ~ 1/N).

Usage: .venv/bin/python bench/orchestration.py [--images 16] [--shard-size 4] [--steps 20] [--short-side 128]
Figures are ratios on this machine (no timed assertions anywhere).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--shard-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--short-side", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="zodi-bench-orch-"))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(tmp / "prefect" / "results"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.transfer import transfer_flow
    from zodi_core import layout, sharding
    from zodi_core.config import DatasetSpec, TransferConfig
    from zodi_core.datasets.ingest import ingest_dataset
    from zodi_core.datasets.synth import write_synthetic
    from zodi_core.transfer.models import load_components, resolve_device, write_tiny_models
    from zodi_core.transfer.runner import transfer_manifest

    data = write_synthetic(tmp / "data", n_train=args.images, n_val=1, n_target=1, n_gta=1)
    models = write_tiny_models(tmp / "models")
    spec = DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="train")
    samples = ingest_dataset(spec, str(tmp / "samples.parquet"), progress=False).manifest_uri
    config = TransferConfig.preset(
        "demo",
        num_inference_steps=args.steps,
        short_side=args.short_side,
        models={"base": str(models), "controlnet": None},
    )

    @flow
    def warm_up() -> int:
        return 1

    t0 = time.perf_counter()
    warm_up()
    server_start = time.perf_counter() - t0

    components = load_components(config.models, *resolve_device(config.device, config.dtype))
    shards = sharding.shard_manifest(samples, args.shard_size)

    def run_direct(out: str) -> None:
        uris = [
            transfer_manifest(
                samples,
                config,
                out,
                sample_ids=s.sample_ids,
                manifest_uri=sharding.shard_manifest_uri(out, s, config),
                components=components,
                progress=False,
            ).manifest_uri
            for s in shards
        ]
        sharding.merge_shard_manifests(uris, layout.paired_manifest_uri(out, "night"), "night")

    # 1-2. direct zodi_core vs. the Prefect flow on the same shards, alternated (the machine is
    # shared: best of --rounds each), each round into a fresh output root so nothing is cached
    serial_flow = transfer_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    direct, flowed, serial = float("inf"), float("inf"), float("inf")
    for r in range(args.rounds):
        t0 = time.perf_counter()
        serial_flow(samples, ["night"], str(tmp / f"serial{r}"), config, args.shard_size)
        serial = min(serial, time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_direct(str(tmp / f"direct{r}"))
        direct = min(direct, time.perf_counter() - t0)
        t0 = time.perf_counter()
        transfer_flow(samples, ["night"], str(tmp / f"flow{r}"), config, args.shard_size)
        flowed = min(flowed, time.perf_counter() - t0)

    # 3. one failed shard out of N, repaired, rerun
    out = str(tmp / "rerun")
    victim = sorted(Path(data["cityscapes"]).rglob("*_leftImg8bit.png"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])
    t0 = time.perf_counter()
    state = transfer_flow(samples, ["night"], out, config, args.shard_size, return_state=True)
    first = time.perf_counter() - t0
    assert state.is_failed(), "the corrupted image should have failed its shard"
    victim.write_bytes(good)
    t0 = time.perf_counter()
    result = transfer_flow(samples, ["night"], out, config, args.shard_size)
    rerun = time.perf_counter() - t0
    n = len(shards)
    summary = result["domains"]["night"]

    print(f"images {args.images}, shards {n} of {args.shard_size}, steps {args.steps}, CPU")
    print(f"prefect ephemeral server start (excluded): {server_start:.2f} s")
    print(
        f"direct zodi_core (serial): {direct:.2f} s\n"
        f"prefect flow, 1 worker thread: {serial:.2f} s   ratio {serial / direct:.3f} (overhead)\n"
        f"prefect flow, default thread pool: {flowed:.2f} s   ratio {flowed / direct:.3f}"
    )
    print(
        f"run with 1 failed shard: {first:.2f} s; rerun after repair: {rerun:.2f} s "
        f"({len(summary['shards_computed'])} computed, {len(summary['shards_cached'])} cached); "
        f"rerun / full flow run = {rerun / flowed:.3f} (1/N = {1 / n:.3f})"
    )


if __name__ == "__main__":
    main()
