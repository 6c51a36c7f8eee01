"""Orchestration overhead per shard, cached-rerun cost, and failed-shard rerun cost.

On synthetic data and tiny models (so model time is small and Prefect's share shows), prints:
1. wall time of the sharded transfer as a Prefect flow (one worker thread, and the default
   thread pool) vs. the same shards through zodi_core directly, and the **overhead per shard**
   ((flow, one thread − direct) / shards); Prefect's ephemeral server start is excluded (printed
   apart) and gets the CLI's startup timeout (``zodi_cli._common.prefect_session``: 120 s), so a
   slow start on a busy machine does not kill the bench;
2. a fully cached rerun: its wall time, and the storage check in it
   (``tasks.transfer.check_cached_shards``: intact cached shards get no task run, so the rest is
   a fixed cost per flow run);
3. wall time of a rerun after one failed shard out of N vs. a full run (target ~ 1/N);
4. what follows for a GPU at ``--target-s-per-image`` (default 0.2 s): the smallest shard size
   that keeps the flow within 5% of the direct loop, and a cached rerun of 375 shards (the
   fixed part + 375 × the check's cost per shard).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/orchestration.py [--images 32] [--shard-size 4]
[--steps 1] [--short-side 64] [--rounds 2]. Figures are ratios and per-shard seconds on this
machine (no timed assertions anywhere); docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--short-side", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--target-s-per-image", type=float, default=0.2)
    args = ap.parse_args()

    from zodi_cli._common import prefect_session

    tmp = Path(tempfile.mkdtemp(prefix="zodi-bench-orch-"))
    with prefect_session(tmp):
        out = run(args, tmp)
    n = out["shards"]
    machine = f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU"
    print(
        f"images {args.images}, shards {n} of {args.shard_size}, steps {args.steps}, "
        f"short side {args.short_side}, tiny models, {machine}"
    )
    print(f"prefect ephemeral server start (excluded): {out['server_start_s']:.2f} s")
    print(
        f"direct zodi_core (serial): {out['direct_s']:.2f} s\n"
        f"prefect flow, 1 worker thread: {out['flow_serial_s']:.2f} s   ratio "
        f"{out['flow_serial_s'] / out['direct_s']:.3f}; overhead per shard "
        f"{out['overhead_per_shard_s']:.3f} s\n"
        f"prefect flow, default thread pool: {out['flow_s']:.2f} s   ratio "
        f"{out['flow_s'] / out['direct_s']:.3f}"
    )
    print(
        f"fully cached rerun: {out['cached_rerun_s']:.2f} s, of which the storage check "
        f"{out['stale_check_s']:.3f} s ({out['stale_check_s'] / n * 1000:.1f} ms per shard)"
    )
    print(
        f"run with 1 failed shard: {out['failed_run_s']:.2f} s; rerun after repair: "
        f"{out['repair_rerun_s']:.2f} s; rerun / full flow run = "
        f"{out['repair_rerun_s'] / out['flow_s']:.3f} (1/N = {1 / n:.3f})"
    )
    t = args.target_s_per_image
    print(
        f"at {t} s/image: shard size >= {out['min_shard_size_5pct']} keeps the flow within 5% "
        f"of the direct loop; a cached rerun of 375 shards ≈ {out['cached_375_shards_s']:.1f} s"
    )
    print(json.dumps({"machine": machine, **vars(args), **out}))


def run(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.transfer import transfer_flow
    from tasks.transfer import check_cached_shards
    from zodi_core import layout, sharding
    from zodi_core.config import DatasetSpec, TransferConfig
    from zodi_core.datasets.ingest import ingest_dataset
    from zodi_core.datasets.synth import write_synthetic
    from zodi_core.device import resolve_device
    from zodi_core.transfer.models import load_components, write_tiny_models
    from zodi_core.transfer.runner import transfer_manifest

    data = write_synthetic(
        tmp / "data", size=(128, 64), n_train=args.images, n_val=1, n_target=1, n_gta=1
    )
    models = write_tiny_models(tmp / "models")
    spec = DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="train")
    samples = ingest_dataset(spec, str(tmp / "samples.parquet"), progress=False).manifest_uri
    config = TransferConfig.preset(
        "demo",
        num_inference_steps=args.steps,
        strength=1.0,
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

    # 1. direct zodi_core vs. the Prefect flow on the same shards, alternated (the machine is
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

    # 2. a fully cached rerun of the last flow run, and the storage check it makes
    cached, check = float("inf"), float("inf")
    night = config.replace(domain="night")

    @flow
    def check_only() -> float:
        t0 = time.perf_counter()
        check_cached_shards(shards, night, str(tmp / "flow0"))
        return time.perf_counter() - t0

    for _ in range(args.rounds):
        t0 = time.perf_counter()
        transfer_flow(samples, ["night"], str(tmp / "flow0"), config, args.shard_size)
        cached = min(cached, time.perf_counter() - t0)
        check = min(check, check_only())

    # 3. one failed shard out of N, repaired, rerun
    out = str(tmp / "rerun")
    victim = sorted(Path(data["cityscapes"]).rglob("*_leftImg8bit.png"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])
    t0 = time.perf_counter()
    state = transfer_flow(samples, ["night"], out, config, args.shard_size, return_state=True)
    first = time.perf_counter() - t0
    if not state.is_failed():
        raise SystemExit("the corrupted image should have failed its shard")
    victim.write_bytes(good)
    t0 = time.perf_counter()
    transfer_flow(samples, ["night"], out, config, args.shard_size)
    rerun = time.perf_counter() - t0

    n = len(shards)
    overhead = max(serial - direct, 0.0) / n
    # overhead / (shard size · s/image) <= 5%
    min_size = math.ceil(overhead / (0.05 * args.target_s_per_image)) if overhead else 1
    return {
        "shards": n,
        "server_start_s": round(server_start, 3),
        "direct_s": round(direct, 3),
        "flow_serial_s": round(serial, 3),
        "flow_s": round(flowed, 3),
        "overhead_per_shard_s": round(overhead, 4),
        "cached_rerun_s": round(cached, 3),
        "stale_check_s": round(check, 4),
        "failed_run_s": round(first, 3),
        "repair_rerun_s": round(rerun, 3),
        "min_shard_size_5pct": min_size,
        # intact cached shards get no task run: a cached rerun is a fixed part (flow, sharding,
        # merge) plus the storage check, which grows with the shards
        "cached_375_shards_s": round(cached - check + 375 * check / n, 2),
    }


if __name__ == "__main__":
    main()
