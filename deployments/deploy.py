"""`zodi deploy`: work pools, blocks and deployments in one idempotent step.

1. work pools: ``zodi-local`` (process) and ``zodi-gpu`` (Kubernetes, with the GPU base job
   template of ``gpu-k8s-job-template.json``); created, or updated in place;
2. blocks: the ``s3-bucket/zodi-results`` result-storage block, when an S3 root is given
   (credentials stay in the workers' environment, deployments/blocks.py);
3. deployments: ``prefect deploy`` on ``deployments/prefect.yaml`` (an upsert), run from the
   repository root so that local deployments load the code of this checkout.

Running it twice changes nothing the second time. Needs ``PREFECT_API_URL`` (a server).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE.parent
PREFECT_FILE = HERE / "prefect.yaml"
GPU_TEMPLATE = HERE / "gpu-k8s-job-template.json"
DEFAULT_IMAGE = "zodi-worker:gpu"
RESULTS_BLOCK = "zodi-results"

Only = Literal["all", "local", "gpu"]

#: name, worker type, base job template file (None: the worker type's default template).
POOLS: dict[str, tuple[str, str, Path | None]] = {
    "local": ("zodi-local", "process", None),
    "gpu": ("zodi-gpu", "kubernetes", GPU_TEMPLATE),
}


def load_job_template(path: str | Path = GPU_TEMPLATE) -> dict[str, Any]:
    """A base job template (``{"variables": schema, "job_configuration": ...}``) from JSON."""
    path = Path(path)
    template = json.loads(path.read_text())
    missing = {"variables", "job_configuration"} - set(template)
    if missing:
        raise ValueError(
            f"base job template {path}: expected keys 'variables' and 'job_configuration', "
            f"missing {sorted(missing)}"
        )
    return template


def render_job_configuration(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker builds for a flow run: the variables' defaults overridden
    by ``values`` (a deployment's job variables), substituted into ``job_configuration``.

    Variables left unset (no default, no value) are dropped, as the worker does. This is
    Prefect's own templating (``prefect.utilities.templating.apply_values``), so a Kubernetes
    manifest can be checked without a cluster or prefect-kubernetes.
    """
    from prefect.utilities.templating import apply_values

    properties = template["variables"].get("properties", {})
    unknown = sorted(set(values) - set(properties))
    if unknown:
        raise ValueError(
            f"values: expected job variables among {sorted(properties)}, received unknown {unknown}"
        )
    variables = {k: copy.deepcopy(p["default"]) for k, p in properties.items() if "default" in p}
    variables.update(values)
    return apply_values(copy.deepcopy(template["job_configuration"]), variables)


async def _ensure_pool(client: Any, name: str, type_: str, template: dict[str, Any]) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(
            WorkPoolCreate(name=name, type=type_, base_job_template=template)
        )
        return "created"
    if pool.type != type_:
        raise ValueError(
            f"work pool {name!r}: expected type {type_!r}, found an existing {pool.type!r} pool; "
            "delete it or pick another name"
        )
    if pool.base_job_template == template:
        return "unchanged"
    await client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
    return "updated"


def _pool_template(type_: str, path: Path | None) -> dict[str, Any]:
    if path is not None:
        return load_job_template(path)
    from prefect.workers.process import ProcessWorker

    if type_ != "process":
        raise ValueError(f"work pool type {type_!r}: a base job template file is required")
    return ProcessWorker.get_default_base_job_template()


def ensure_work_pools(only: Only = "all") -> dict[str, str]:
    """Create or update the work pools; return ``{pool: created|updated|unchanged}``."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def _all() -> dict[str, str]:
        out = {}
        async with get_client() as client:
            for key, (name, type_, path) in POOLS.items():
                if only in ("all", key):
                    out[name] = await _ensure_pool(client, name, type_, _pool_template(type_, path))
        return out

    return run_coro_as_sync(_all())


def deployment_names(only: Only) -> list[str]:
    """``prefect deploy --name`` patterns for a pool selection (deployment names end in it)."""
    return ["*-local", "*-gpu"] if only == "all" else [f"*-{only}"]


def deploy_deployments(
    only: Only = "all",
    root: str | None = None,
    image: str | None = None,
    prefect_file: str | Path = PREFECT_FILE,
) -> list[str]:
    """Run ``prefect deploy`` on the selected deployments of ``prefect_file`` (an upsert).

    ``root`` and ``image`` fill ``{{ $ZODI_ROOT }}`` and ``{{ $ZODI_IMAGE }}`` in the file.
    Returns the deployment names (``flow/deployment``) found on the server afterwards.
    """
    prefect_file = Path(prefect_file).resolve()
    if not prefect_file.is_file():
        raise FileNotFoundError(f"prefect_file: no such file {prefect_file}")
    env = dict(os.environ)
    env["ZODI_ROOT"] = root or env.get("ZODI_ROOT") or str(Path("zodi-data").resolve())
    env["ZODI_IMAGE"] = image or env.get("ZODI_IMAGE") or DEFAULT_IMAGE
    cmd = [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy"]
    for pattern in deployment_names(only):
        cmd += ["--name", pattern]
    cmd += ["--prefect-file", str(prefect_file)]
    # cwd = repository root: entrypoints are relative to it, and a local deployment's pull step
    # (prefect's default) points at it.
    proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"prefect deploy failed (exit {proc.returncode}):\n{tail}")
    return list_deployments()


def list_deployments() -> list[str]:
    """``flow/deployment`` names on the server, sorted."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def _names() -> list[str]:
        async with get_client() as client:
            deployments = await client.read_deployments()
            flows = {f.id: f.name for f in await client.read_flows()}
        return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments)

    return run_coro_as_sync(_names())


def deploy(
    only: Only = "all",
    root: str | None = None,
    image: str | None = None,
    s3_root: str | None = None,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
    prefect_file: str | Path = PREFECT_FILE,
) -> dict[str, Any]:
    """Pools, blocks and deployments, idempotently; a JSON-able summary of what it did."""
    if only not in ("all", "local", "gpu"):
        raise ValueError(f"only: expected 'all', 'local' or 'gpu', received {only!r}")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError(
            "PREFECT_API_URL: expected the URL of a Prefect server (deployments live there), "
            "received nothing; start one with `prefect server start` and run "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    # 1. work pools
    pools = ensure_work_pools(only)
    # 2. blocks: result storage in S3 (credentials from the workers' environment)
    blocks = []
    if s3_root:
        from deployments.blocks import save_s3_result_storage

        save_s3_result_storage(RESULTS_BLOCK, s3_root, endpoint_url=s3_endpoint, region=s3_region)
        blocks.append(f"s3-bucket/{RESULTS_BLOCK}")
    # 3. deployments
    names = deploy_deployments(only, root=root, image=image, prefect_file=prefect_file)
    return {
        "api_url": PREFECT_API_URL.value(),
        "pools": pools,
        "blocks": blocks,
        "deployments": names,
    }
