"""``zodi deploy`` (pools, blocks, deployments) and ``zodi submit`` (run a deployment) on the
Prefect server of ``PREFECT_API_URL``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zodi_cli._common import CLIError, RunFailed, command, demo_config, flow_failure, prepare_demo
from zodi_core.polling import poll


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "deploy", run_deploy,
        "create the work pools, blocks and deployments on a Prefect server (idempotent)",
        "Create or update the zodi-local (process) and zodi-gpu (Kubernetes, GPU job template) "
        "work pools, the S3 result-storage block (with --s3-root), and every deployment of "
        "deployments/prefect.yaml. Running it again changes nothing. Needs PREFECT_API_URL.",
        {
            "--only": {"choices": ("all", "local", "gpu"), "default": "all",
                       "help": "pools and deployments to create (default: all)"},
            "--root": "storage root of the scheduled regeneration (ZODI_ROOT)",
            "--image": "worker image of the GPU deployments (ZODI_IMAGE)",
            "--s3-root": "s3://bucket/prefix for Prefect results (saves a block)",
            "--s3-endpoint": "S3-compatible endpoint URL (default: AWS)",
            "--s3-region": "S3 region",
            "--prefect-file": "prefect.yaml to deploy (default: deployments/prefect.yaml)",
        },
    )  # fmt: skip
    p = command(sub, parent, "submit", run_submit,
        "run the pipeline_flow deployment on a config (or the demo set-up)",
        "Create a flow run of a pipeline_flow deployment with a PipelineConfig (--config FILE), "
        "or with the demo's synthetic data and tiny models written under --workdir (--demo). A "
        "worker of the deployment's pool runs it; --wait follows it.",
        {
            "--deployment": {"default": "pipeline_flow/zodi-pipeline-local",
                             "help": "flow/deployment name (default: %(default)s)"},
            "--workdir": {"default": "zodi-demo", "help": "--demo work folder (default: zodi-demo)"},
            "--wait": {"action": "store_true", "help": "follow the run's states; end with the "
                       "report location and the run's UI URL"},
            "--timeout": {"type": float, "default": 3600.0, "help": "--wait limit in seconds "
                          "(default: 3600); the run itself goes on"},
        },
    )  # fmt: skip
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--config",
        help="PipelineConfig YAML file; its relative paths are made absolute against its folder "
        "before sending (the worker must see the same paths, or use s3://)",
    )
    group.add_argument("--demo", action="store_true", help="synthetic data and tiny models")


def _require_server() -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise CLIError(
            "PREFECT_API_URL is not set: start a server (`prefect server start`) and run "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )


def run_deploy(args: argparse.Namespace) -> dict[str, Any]:
    from deployments.deploy import PREFECT_FILE, deploy

    _require_server()
    try:
        summary = deploy(
            only=args.only, root=args.root, image=args.image, s3_root=args.s3_root,
            s3_endpoint=args.s3_endpoint, s3_region=args.s3_region,
            prefect_file=args.prefect_file or PREFECT_FILE,
        )  # fmt: skip
    except RuntimeError as err:  # prefect deploy's own failure, already explained
        raise CLIError(str(err)) from None
    for pool, what in summary["pools"].items():
        print(f"[deploy] work pool {pool}: {what}")
    for block in summary["blocks"]:
        print(f"[deploy] block {block}: saved")
    for variable, what in summary.get("variables", {}).items():
        print(f"[deploy] variable {variable}: {what}")
    for name in summary["deployments"]:
        print(f"[deploy] deployment {name}")
    for automation, what in summary.get("automations", {}).items():
        print(f"[deploy] automation {automation}: {what}")
    print("[deploy] start a worker: prefect worker start --pool zodi-local")
    return summary


def run_submit(args: argparse.Namespace) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.utilities.urls import url_for

    from zodi_core import layout
    from zodi_core.config import PipelineConfig

    _require_server()
    if args.demo:
        workdir = Path(args.workdir).resolve()
        config = demo_config(workdir, *prepare_demo(workdir, seed=0), ["night"])
    else:
        config = PipelineConfig.from_yaml(args.config)
    params = {"config": config.model_dump(mode="json")}
    run = run_deployment(args.deployment, parameters=params, timeout=0)
    print(f"[submit] flow run {run.name} ({run.id}) of {args.deployment}")
    ui_url = url_for("flow-run", obj_id=run.id)
    out = {"flow_run_id": str(run.id), "flow_run_name": run.name, "ui_url": ui_url}
    report = f"{config.storage.root.rstrip('/')}/{layout.REPORT_MD}"
    with get_client(sync_client=True) as client:
        pool = _warn_if_no_worker(client, args.deployment)
        if not args.wait:
            print(f"[submit] follow it: {ui_url or f'prefect flow-run inspect {run.id}'}")
            return out
        try:  # a deployment's run is created Scheduled: it always has a state
            state = poll(
                lambda: client.read_flow_run(run.id).state,
                lambda s: s.is_final(),
                timeout=args.timeout,
                what=f"flow run {run.name} ({run.id})",
                on_change=lambda s: print(f"[submit] {s.name}"),
            )
        except TimeoutError as err:
            hint = f"; is a worker polling pool {pool!r}?" if pool else ""
            raise RunFailed(
                f"{err} (--timeout){hint}; the run goes on: follow it at {ui_url}", out
            ) from None
    out["state"] = state.name
    if not state.is_completed():
        raise flow_failure(state, None, out)
    out["report"] = report
    print(f"[submit] {state.name}: report {report}; run {ui_url}")
    return out


def _warn_if_no_worker(client: Any, deployment: str) -> str | None:
    """Print a warning when no worker of the deployment's pool is online; return the pool."""
    try:
        pool = client.read_deployment_by_name(deployment).work_pool_name
        workers = client.read_workers_for_work_pool(pool) if pool else []
    except Exception:  # noqa: BLE001 - a warning only; the run itself was created
        return None
    if pool and not any(str(getattr(w, "status", "")).upper().endswith("ONLINE") for w in workers):
        print(
            f"[submit] warning: no worker is polling pool {pool!r}; the run waits until one "
            f"starts: prefect worker start --pool {pool}"
        )
    return pool
