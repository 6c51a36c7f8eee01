"""regenerate_flow: regenerate only the domains whose prompt settings changed (the decisions
live in ``zodi_core.regeneration``; this flow only sequences them)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from flows.evaluate import evaluate_flow
from flows.train import train_flow
from flows.transfer import transfer_flow
from tasks.regenerate import (
    load_prompt_config_task,
    plan_regeneration_task,
    publish_regeneration_report_task,
)
from zodi_core import regeneration
from zodi_core.config import EvalConfig, TrainConfig, TransferConfig
from zodi_core.config.pipeline import DEFAULT_SHARD_SIZE


@flow(name="regenerate_flow", persist_result=True)
def regenerate_flow(
    prompt_config_uri: str,
    samples_uri: str,
    out_root: str,
    transfer: TransferConfig | None = None,
    domains: list[str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    retrain: bool = False,
    train: TrainConfig | None = None,
    evaluation: EvalConfig | None = None,
    targets: dict[str, str] | None = None,
) -> Any:
    """Compare each domain's prompt settings with its paired manifest; regenerate changed ones.

    ``domains`` None: every domain generated under ``out_root`` plus those the prompt config
    lists; ``transfer`` None: the root's last generation's settings. ``retrain`` retrains the
    regenerated domains and evaluates them on ``targets`` ({name: samples URI}). Returns
    ``regeneration.build_report``'s report, a Failed state with it as data if a transfer failed.
    """
    logger = get_run_logger()
    # 1. read the prompt config
    prompts = load_prompt_config_task(prompt_config_uri)
    # 2. compare every domain's wanted prompt settings with its paired manifest
    plan = plan_regeneration_task(prompts, transfer, domains, out_root, samples_uri)
    for status in plan.statuses:
        logger.info("%s", status.line())
    # 3. regenerate each changed domain with its own prompt settings
    outcomes = []
    for job in plan.jobs:
        state = transfer_flow(
            samples_uri, [job.domain], out_root, job, shard_size, return_state=True
        )
        ok, value = state.is_completed(), state.result(raise_on_failure=False)
        outcomes.append(regeneration.DomainOutcome.of(job.domain, ok, state.message, value))
    report = regeneration.build_report(plan, outcomes)
    # 4. optionally retrain and re-evaluate the regenerated domains
    if retrain and report["regenerated"]:
        train = train or TrainConfig()
        checkpoints = train_flow(samples_uri, report["regenerated"], out_root, train)
        report["evaluation"] = evaluate_flow(
            checkpoints, targets or {}, {}, out_root, train, evaluation or EvalConfig()
        )
    # 5. report what changed (old and new settings) and what was regenerated
    publish_regeneration_report_task(report)
    logger.info("%s", regeneration.summary_line(report))
    if report["failed"]:
        names = "; ".join(f"{d}: {m}" for d, m in sorted(report["failed"].items()))
        return Failed(message=f"regeneration failed for {names}", data=report)
    return report
