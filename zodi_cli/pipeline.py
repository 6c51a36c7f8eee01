"""Prefect-backed subcommands of ``zodi``: ``demo`` (the README's main job) and ``pipeline``.

Prefect is imported inside the commands, after the environment they need is set: settings are
read when a flow starts, never at import.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zodi_cli._common import demo_config, flow_failure, prefect_session, prepare_demo

DEMO_NOTE = (
    "The demo uses tiny random-weight models: its generated images are noise-like and its mIoU "
    "numbers are meaningless. They show that every stage runs and how results are reported. To "
    "run for real: `zodi pipeline --config examples/cityscapes_to_acdc.yaml --models "
    "stable-diffusion-v1-5/stable-diffusion-v1-5` (or a local folder) with real Cityscapes/ACDC/"
    "GTA5 roots in the config and `storage.root: s3://bucket/prefix`."
)


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[parent],
        help="run the whole pipeline on synthetic data and tiny models (CPU, minutes)",
        description="Synthetic street scenes + tiny random-weight models → ingest → sharded "
        "transfer → train source-only and ZoDi → evaluate → report, with Prefect in ephemeral "
        "mode and local storage under --workdir. A second run reuses every cached shard.",
    )
    p.add_argument("--workdir", default="zodi-demo", help="work folder (default: ./zodi-demo)")
    p.add_argument("--domains", default="night", help="comma-separated target domains")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.set_defaults(func=run_demo)

    p = sub.add_parser(
        "pipeline",
        parents=[parent],
        help="run pipeline_flow on a YAML config",
        description="Run the whole pipeline described by a PipelineConfig YAML file "
        "(see examples/). Prefect runs in ephemeral mode unless PREFECT_API_URL is set.",
    )
    p.add_argument("--config", required=True, help="PipelineConfig YAML file")
    p.add_argument("--models", help="base model: hub id or local folder (overrides the config)")
    p.add_argument("--controlnet", help="ControlNet: hub id or local folder (overrides)")
    p.add_argument("--storage", help="storage root: folder or s3://bucket/prefix (overrides)")
    p.add_argument(
        "--no-preflight", action="store_true",
        help="skip the checks of dataset roots, models and storage before the run",
    )  # fmt: skip
    p.set_defaults(func=run_pipeline)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir).resolve()
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    data, models_dir = prepare_demo(workdir, args.seed, log=lambda m: print(f"[demo] {m}"))
    config = demo_config(workdir, data, models_dir, domains)
    print("[demo] 3/3 pipeline_flow (Prefect, ephemeral)")
    summary = _run(config, args.verbose, workdir=workdir)
    root = Path(config.storage.root)
    for path in sorted((root / "manifests").glob("*.parquet")):
        if not path.name.endswith(".rejects.parquet"):
            print(f"[demo] manifest {path.stem}: {_manifest_line(str(path))}")
    # The README promises report.json / report.md in the work folder itself.
    for name in ("report.json", "report.md"):
        if (root / name).exists():
            (workdir / name).write_bytes((root / name).read_bytes())
    summary["report_json"] = str(workdir / "report.json")
    summary["report_md"] = str(workdir / "report.md")
    print(f"[demo] report: {workdir / 'report.md'} and {workdir / 'report.json'}")
    for domain, grid in summary.get("sample_grids", {}).items():
        print(f"[demo] sample grid ({domain}): {grid}")
    print(f"[demo] note: {DEMO_NOTE}")
    return summary


def _manifest_line(uri: str) -> str:
    from zodi_core import manifest

    summary = manifest.summarize(manifest.read_manifest(uri))
    groups = ", ".join(
        f"{g['count_all']} {g.get('dataset', '')}/{g.get('split', '')}/{g.get('domain', '')}"
        for g in summary.get("groups", [])
    )
    return f"{summary['rows']} rows ({groups}) → {uri}"


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.config import PipelineConfig

    overrides: dict[str, Any] = {}
    if args.models or args.controlnet:
        models: dict[str, Any] = {}
        if args.models:
            models["base"] = args.models
        if args.controlnet:
            models["controlnet"] = args.controlnet
        overrides["transfer"] = {"models": models}
    if args.storage:
        overrides["storage"] = {"root": args.storage}
    config = PipelineConfig.from_yaml(args.config, **overrides)
    return _run(config, args.verbose, skip_preflight=args.no_preflight)


def _run(
    config: Any, verbose: bool, workdir: Path | None = None, skip_preflight: bool = False
) -> dict[str, Any]:
    """Preflight, then pipeline_flow with Prefect's console logs off unless ``verbose``.

    A failed flow run becomes one error line: the exception that failed it (its type decides the
    exit code: 2 for a configuration error, 1 otherwise), else the state's message.
    """
    from zodi_core.preflight import check_pipeline

    if not skip_preflight:
        check_pipeline(config)  # raises PreflightError listing every problem (exit 2)
        print("[pipeline] preflight ok: dataset roots, models, storage")
    with prefect_session(workdir, verbose):
        from prefect.settings import PREFECT_API_URL

        from flows.pipeline import pipeline_flow

        server = PREFECT_API_URL.value() or "ephemeral (set PREFECT_API_URL to use a server)"
        print(f"[pipeline] pipeline_flow → {config.storage.root}; Prefect: {server}")

        # the flow's own preflight (step 0) is for deployed runs: the CLI just checked
        state = pipeline_flow(config, preflight=False, return_state=True)
        result = state.result(raise_on_failure=False)
    transfer = result.get("transfer", {}) if isinstance(result, dict) else {}
    for domain, s in transfer.items():
        print(
            f"[transfer] {domain}: shards {len(s['shards_computed'])} computed, "
            f"{len(s['shards_cached'])} cached, {len(s['shards_failed'])} failed; images "
            f"{s['images_written']} written, {s['images_skipped']} skipped, {s['images_failed']} failed"
        )
        for shard, err in s["shards_failed"].items():
            print(f"[transfer] {domain}: FAILED {shard}: {err}")
    if not state.is_completed():
        raise flow_failure(state, result, {"transfer": transfer})
    uris = result.get("uris", {})
    print(f"[pipeline] done: report {uris.get('markdown') or uris}")
    return {
        "report": result["uris"],
        "transfer": transfer,
        "sample_grids": result.get("sample_grids", {}),
        "results": result.get("results", {}),
    }
