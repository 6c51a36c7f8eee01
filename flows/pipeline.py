"""pipeline_flow: ingest → shard → transfer → merge → source-only → score + filter → ZoDi →
evaluate → report."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from flows.evaluate import evaluate_flow
from flows.ingest import ingest_flow
from flows.train import train_flow
from flows.transfer import transfer_flow
from tasks.preflight import check_pipeline_task
from tasks.quality import filter_paired_task, quality_figures_task, score_paired_cached
from tasks.report import render_sample_grid_task, write_report_task
from zodi_core import layout, storage
from zodi_core.config import PipelineConfig
from zodi_core.quality.scores import scorer_checkpoint


def failed_transfer(state: State, stage: str) -> State:
    """The parent's Failed state for a failed ``transfer_flow`` run (its message and per-domain
    summary); a transfer that raised is re-raised as is: its error is the one to read."""
    data: Any = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    domains = data.get("domains", {}) if isinstance(data, dict) else {}
    return Failed(message=f"{stage}: {state.message}", data={"transfer": domains})


@flow(name="pipeline_flow")
def pipeline_flow(config: PipelineConfig, preflight: bool = True) -> Any:
    """Run the whole method on ``config``; return the report (dict with the report URIs).
    ``zodi pipeline`` runs the preflight before starting Prefect and passes ``preflight=False``."""
    root = config.storage.root
    # S3 options for this run and its tasks (a context variable: no os.environ write)
    storage.use_options(**config.storage.storage_options())
    # 0. preflight: everything that would stop the run, before any heavy work
    if preflight:
        check_pipeline_task(config)
    val_specs = [config.source_val] if config.source_val else []
    # 1. ingest source train, source val and real targets into samples manifests
    manifests = ingest_flow([config.source, *val_specs, *config.targets], root)
    source_uri = manifests[config.source.manifest_name]
    target_uris = {spec.manifest_name: manifests[spec.manifest_name] for spec in config.targets}
    # 2-4. shard, transfer and merge the source train split into each target domain;
    # 5. the source val split too: the proxy targets (no real target image needed)
    splits = {"transfer": (source_uri, root)}
    if config.source_val and config.evaluation.proxy:
        val_uri = manifests[config.source_val.manifest_name]
        splits["proxy transfer"] = (val_uri, layout.proxy_root(root))
    transferred: dict[str, Any] = {"proxy transfer": {"paired": {}}}
    for stage, (uri, out) in splits.items():
        state = transfer_flow(
            uri, list(config.domains), out, config.transfer, config.shard_size, return_state=True
        )
        if state.is_failed():
            return failed_transfer(state, stage)
        transferred[stage] = state.result()
    transfer, proxy_uris = transferred["transfer"], transferred["proxy transfer"]["paired"]
    # 6. train the source-only baseline first: it scores the generated images' layout
    baseline = train_flow(source_uri, {}, root, config.train)
    # 7. score every generated image (cached; never regenerates one) and flag the rows the
    #    quality settings drop (none deleted); ZoDi trains on the kept rows
    paired, quality = transfer["paired"], {}
    if config.quality.score:
        scorer = scorer_checkpoint(config.quality, config.train.mmseg_config, baseline)
        scale = (config.evaluation.width, config.evaluation.height)
        filtered = {
            d: filter_paired_task(
                score_paired_cached(uri, d, root, *scorer, config.quality, scale),
                root,
                config.quality,
            )
            for d, uri in transfer["paired"].items()
        }
        paired = {d: f["train_uri"] for d, f in filtered.items()}
        quality = quality_figures_task(filtered, root)
    # 8. train one ZoDi model per domain (the baseline is a cache hit)
    checkpoints = train_flow(source_uri, paired, root, config.train)
    # 9. evaluate every model on every real target and on its proxy
    results = evaluate_flow(
        checkpoints, target_uris, proxy_uris, root, config.train, config.evaluation,
        target_domains={target_uris[t.manifest_name]: t.target_domain for t in config.targets},
    )  # fmt: skip
    # 10. sample grids and the report (JSON + Markdown in storage, a Prefect artifact for people)
    grids = {d: render_sample_grid_task(uri, root, d) for d, uri in transfer["paired"].items()}
    report = write_report_task(
        dict(results=results, transfer=transfer["domains"], sample_grids=grids, quality=quality),
        root,
        config.report,
    )
    get_run_logger().info("report: %s", report["uris"]["markdown"])
    return report
