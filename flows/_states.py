"""Turning a failed subflow's state into the parent's failure, without masking the real error."""

from __future__ import annotations

from typing import Any

from prefect.states import Failed, State


def failed_transfer(state: State, stage: str) -> State:
    """The parent's Failed state for a failed ``transfer_flow`` run.

    A transfer that ran and had failed shards returns a Failed state whose data is its summary:
    keep the message (it names the shards) and the per-domain summary. A transfer that raised
    (bad manifest, storage outage after retries, ...) is re-raised as is: its error is the one
    a person needs to read.
    """
    data: Any = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    domains = data.get("domains", {}) if isinstance(data, dict) else {}
    return Failed(message=f"{stage}: {state.message}", data={"transfer": domains})
