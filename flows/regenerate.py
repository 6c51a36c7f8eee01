"""regenerate_flow: regenerate only the domains whose prompt config changed (deployed on a cron).

The prompt config is a YAML file in storage (a path or ``s3://`` URI) or a Prefect Variable
(``variable://<name>``, holding the same YAML as a string, or the same mapping as JSON).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from flows.evaluate import evaluate_flow
from flows.train import train_flow
from flows.transfer import transfer_flow
from zodi_core import prompts as prompt_config
from zodi_core.config import EvalConfig, TrainConfig, TransferConfig

VARIABLE_SCHEME = "variable://"


# Never cached: the point is to see the current prompt config and manifests.
@task(cache_policy=NO_CACHE)
def load_prompt_config_task(prompt_config_uri: str) -> prompt_config.PromptConfig:
    """Read the prompt config from storage, or from a Prefect Variable (``variable://name``)."""
    if prompt_config_uri.startswith(VARIABLE_SCHEME):
        from prefect.variables import Variable

        name = prompt_config_uri.removeprefix(VARIABLE_SCHEME)
        value = Variable.get(name)
        if value is None:
            raise ValueError(f"prompt_config_uri: no Prefect Variable named {name!r}")
        if isinstance(value, dict):
            return prompt_config.PromptConfig(**value)
        return prompt_config.PromptConfig.from_text(str(value), source=prompt_config_uri)
    return prompt_config.load_prompt_config(prompt_config_uri)


@task(cache_policy=NO_CACHE)
def compare_prompts_task(
    prompts: prompt_config.PromptConfig,
    transfer: TransferConfig,
    domains: list[str] | None,
    out_root: str,
) -> list[prompt_config.DomainPromptStatus]:
    return prompt_config.compare_prompts(prompts, transfer, domains, out_root)


def _report_markdown(version: str, statuses: list[dict[str, Any]], report: dict[str, Any]) -> str:
    lines = [f"# Prompt regeneration (prompt config version {version})", ""]
    lines += [
        "| domain | status | recorded digest | wanted digest | regenerated |",
        "|---|---|---|---|---|",
    ]
    for s in statuses:
        done = "yes" if s["domain"] in report["regenerated"] else ""
        if s["domain"] in report["failed"]:
            done = "FAILED"
        recorded = ",".join(s["recorded_digests"]) or "–"
        lines.append(
            f"| {s['domain']} | {s['status']} | {recorded} | {s['wanted_digest']} | {done} |"
        )
    return "\n".join(lines) + "\n"


@flow(name="regenerate_flow", persist_result=True)
def regenerate_flow(
    prompt_config_uri: str,
    samples_uri: str,
    out_root: str,
    transfer: TransferConfig | None = None,
    domains: list[str] | None = None,
    shard_size: int = 8,
    retrain: bool = False,
    train: TrainConfig | None = None,
    evaluation: EvalConfig | None = None,
    targets: dict[str, str] | None = None,
) -> Any:
    """Compare each domain's prompt settings with its paired manifest; regenerate changed ones.

    ``domains`` None: the domains listed in the prompt config. A domain is regenerated when
    its prompt, negative prompt or strength differ from what its paired manifest records, or
    when it has no paired manifest yet. The changed prompt changes the transfer config digest,
    so every shard misses the cache and every image is rewritten; unchanged domains cost one
    manifest read. With ``retrain``, the source-only and ZoDi models of the regenerated domains
    are retrained and evaluated on ``targets`` (``{name: samples manifest URI}``).

    Returns ``{"version", "changed", "unchanged", "regenerated": {domain: paired URI},
    "failed": {domain: message}, "transfer": {domain: summary}, "statuses": [...]}``.
    """
    logger = get_run_logger()
    transfer = transfer or TransferConfig()
    # 1. read the prompt config
    prompts = load_prompt_config_task(prompt_config_uri)
    # 2. compare every domain's wanted prompt settings with its paired manifest
    statuses = compare_prompts_task(prompts, transfer, domains, out_root)
    for s in statuses:
        logger.info("%s", s.line())
    report: dict[str, Any] = {
        "version": prompts.version,
        "changed": [s.domain for s in statuses if s.needs_regeneration],
        "unchanged": [s.domain for s in statuses if not s.needs_regeneration],
        "regenerated": {},
        "failed": {},
        "transfer": {},
        "statuses": [s.to_dict() for s in statuses],
    }
    # 3. regenerate each changed domain with its own prompt settings
    for domain in report["changed"]:
        config = prompts.transfer_config(transfer, domain)
        state = transfer_flow(
            samples_uri, [domain], out_root, config, shard_size, return_state=True
        )
        result = state.result(raise_on_failure=False)
        report["transfer"][domain] = result["domains"][domain]
        if state.is_failed():
            report["failed"][domain] = state.message
        else:
            report["regenerated"][domain] = result["paired"][domain]
    # 4. optionally retrain and re-evaluate the regenerated domains
    if retrain and report["regenerated"]:
        train = train or TrainConfig()
        checkpoints = train_flow(samples_uri, report["regenerated"], out_root, train)
        report["evaluation"] = evaluate_flow(
            checkpoints, targets or {}, {}, out_root, train, evaluation or EvalConfig()
        )
    # 5. report what changed and what was regenerated
    create_markdown_artifact(
        _report_markdown(prompts.version, report["statuses"], report),
        key="zodi-regeneration",
        description="Domains whose prompts changed, and what was regenerated",
    )
    logger.info(
        "prompt config %s: changed %s, unchanged %s, regenerated %s",
        prompts.version, report["changed"], report["unchanged"], sorted(report["regenerated"]),
    )  # fmt: skip
    if report["failed"]:
        names = ", ".join(sorted(report["failed"]))
        return Failed(message=f"regeneration failed for: {names}", data=report)
    return report
