"""Fan-out tasks: start a flow run of a deployment, wait for flow runs to end."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import MissingResult

from zodi_core.polling import poll


@task(cache_policy=NO_CACHE)
def launch_child_run_task(deployment: str, parameters: dict[str, Any], name: str) -> str:
    """Create a flow run of ``deployment``; return its id at once (the parent waits for all)."""
    return str(run_deployment(deployment, parameters=parameters, timeout=0, flow_run_name=name).id)


def _final_state(state: Any) -> dict[str, Any]:
    try:
        # The child's return value (or its Failed data): needs persisted results that the
        # parent can read (a shared local path, or an S3 result block).
        value = state.result(raise_on_failure=False)
    except MissingResult:
        value = None
    return {
        "state": state.name,
        "ok": state.is_completed(),
        "message": state.message or "",
        "result": value if isinstance(value, dict) else None,
    }


@task(cache_policy=NO_CACHE)
def wait_for_flow_runs_task(
    flow_run_ids: list[str], poll_seconds: float, timeout_seconds: float
) -> dict[str, dict[str, Any]]:
    """Wait until every flow run is final; ``{id: {"state", "ok", "message", "result"}}``
    (``result``: the run's return value or failed data when it is a mapping, else None)."""
    with get_client(sync_client=True) as client:
        states = poll(
            lambda: {i: client.read_flow_run(UUID(i)).state for i in flow_run_ids},
            lambda found: all(s is not None and s.is_final() for s in found.values()),
            timeout=timeout_seconds,
            interval=poll_seconds,
            what=f"child flow runs {sorted(flow_run_ids)}",
        )
    return {i: _final_state(s) for i, s in states.items()}
