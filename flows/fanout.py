"""Scale-out of one domain's transfer.

Across machines — ``fanout_transfer_flow``: the shards of one domain are split into groups, and
each group becomes a flow run of the ``transfer_flow`` deployment (``run_deployment``), so every
worker of the pool (one GPU each) takes a share. The parent waits, reruns a failed child alone
(its other shards are cache hits), then merges the shard manifests into the paired manifest.

On one multi-GPU machine — :func:`multi_gpu_task_runner`: a Dask task runner with one worker
per GPU (``CUDA_VISIBLE_DEVICES`` set per worker by dask-cuda), for ``transfer_flow`` itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.states import Failed

from tasks.transfer import merge_shards_task, shard_manifest_task
from zodi_core import pipeline
from zodi_core.config import TransferConfig

DEFAULT_CHILD_DEPLOYMENT = "transfer_flow/transfer-local"


@dataclass
class ChildOutcome:
    """One child flow run: its group of shards, final state and transfer summary."""

    group: list[int]
    attempt: int
    flow_run_id: str
    state: str
    ok: bool
    message: str = ""
    summary: dict[str, Any] | None = None


@dataclass
class FanoutReport:
    """Every child of every attempt, in launch order."""

    children: list[ChildOutcome] = field(default_factory=list)

    def final(self) -> dict[int, ChildOutcome]:
        """The last attempt of each group, by the group's first shard index."""
        return {c.group[0]: c for c in self.children}

    def failed(self) -> list[ChildOutcome]:
        return [c for c in self.final().values() if not c.ok]


def run_children(
    groups: Sequence[list[int]],
    launch: Callable[[list[int], int], str],
    wait: Callable[[list[str]], dict[str, ChildOutcome]],
    retries: int,
) -> FanoutReport:
    """Launch one child per group, wait for all, relaunch only the failed groups (``retries``
    more times at most). ``launch(group, attempt)`` returns a flow run id; ``wait(ids)`` returns
    an outcome per id once every run is final."""
    if retries < 0:
        raise ValueError(f"child_retries: expected an integer >= 0, received {retries}")
    report = FanoutReport()
    todo = list(range(len(groups)))
    for attempt in range(retries + 1):
        ids = {i: launch(list(groups[i]), attempt) for i in todo}
        outcomes = wait(list(ids.values()))
        report.children += [outcomes[run_id] for run_id in ids.values()]
        todo = [i for i in todo if not outcomes[ids[i]].ok]
        if not todo:
            break
    return report


def _launch_child(deployment: str, parameters: dict[str, Any], name: str) -> str:
    from prefect.deployments import run_deployment

    # timeout=0: return as soon as the run is created; the parent waits for all children at once.
    run = run_deployment(deployment, parameters=parameters, timeout=0, flow_run_name=name)
    return str(run.id)


def _wait_children(
    ids: list[str],
    groups: dict[str, tuple[list[int], int]],
    domain: str,
    poll_s: float,
    timeout_s: float,
) -> dict[str, ChildOutcome]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import MissingResult

    deadline = time.monotonic() + timeout_s
    pending, done = set(ids), {}
    with get_client(sync_client=True) as client:
        while pending:
            for run_id in sorted(pending):
                run = client.read_flow_run(UUID(run_id))
                if run.state is None or not run.state.is_final():
                    continue
                group, attempt = groups[run_id]
                try:
                    # The child's return value (or its Failed data): needs persisted results
                    # that the parent can read (shared local path, or an S3 result block).
                    value = run.state.result(raise_on_failure=False)
                except MissingResult:
                    value = None
                summary = value["domains"].get(domain) if isinstance(value, dict) else None
                done[run_id] = ChildOutcome(
                    group=group,
                    attempt=attempt,
                    flow_run_id=run_id,
                    state=run.state.name,
                    ok=run.state.is_completed(),
                    message=run.state.message or "",
                    summary=summary,
                )
                pending.discard(run_id)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"child flow runs still running after {timeout_s:.0f} s: {sorted(pending)}"
                )
            if pending:
                time.sleep(poll_s)
    return done


@flow(name="fanout_transfer_flow")
def fanout_transfer_flow(
    samples_uri: str,
    domain: str,
    out_root: str,
    transfer: TransferConfig,
    shard_size: int = 8,
    shards_per_run: int = 4,
    deployment: str = DEFAULT_CHILD_DEPLOYMENT,
    child_retries: int = 1,
    poll_seconds: float = 2.0,
    timeout_seconds: float = 6 * 3600,
) -> Any:
    """Transfer one domain as child runs of ``deployment`` (one per ``shards_per_run`` shards).

    Returns ``{"domain", "paired", "summary", "children"}``; when a child still fails after
    ``child_retries`` reruns, a Failed state naming its shards, with that dict as data.
    """
    logger = get_run_logger()
    config = transfer.replace(domain=domain)
    # 1. shard exactly as every child will (sorted by sample_id: deterministic)
    shards = shard_manifest_task(samples_uri, shard_size)
    groups = pipeline.group_shards(len(shards), shards_per_run)
    launched: dict[str, tuple[list[int], int]] = {}

    def launch(group: list[int], attempt: int) -> str:
        params = {
            "samples_uri": samples_uri,
            "domains": [domain],
            "out_root": out_root,
            "transfer": config.model_dump(mode="json"),
            "shard_size": shard_size,
            "shard_indices": group,
        }
        name = f"{domain}-shards-{group[0]}-{group[-1]}-try{attempt}"
        run_id = _launch_child(deployment, params, name)
        launched[run_id] = (group, attempt)
        logger.info("launched %s (%s)", name, run_id)
        return run_id

    def wait(ids: list[str]) -> dict[str, ChildOutcome]:
        return _wait_children(ids, launched, domain, poll_seconds, timeout_seconds)

    # 2-3. one child per group, all at once; wait; rerun only the failed children
    report = run_children(groups, launch, wait, child_retries)
    # 4. merge the shard manifests of every shard (the same URIs the children wrote)
    summary = pipeline.RunSummary()
    for child in report.final().values():
        if child.summary:
            summary.merge(pipeline.RunSummary(**child.summary))
    result: dict[str, Any] = {
        "domain": domain,
        "paired": None,
        "summary": summary.to_dict(),
        "children": [asdict(c) for c in report.children],
    }
    failed = report.failed()
    if not failed:
        uris = [pipeline.shard_output_uri(out_root, domain, s, config) for s in shards]
        merged = merge_shards_task(uris, pipeline.paired_manifest_uri(out_root, domain), domain)
        result["paired"] = merged["uri"]
    # 5. summary; fail naming the children (and their shards) that failed every attempt
    logger.info("%s: %d children, %s", domain, len(groups), summary.line())
    if failed:
        names = "; ".join(f"shards {c.group} ({c.state}: {c.message})" for c in failed)
        return Failed(message=f"fan-out children failed: {names}", data=result)
    return result


def multi_gpu_task_runner(n_gpus: int | None = None) -> Any:
    """A Dask task runner with one single-threaded worker per GPU of this machine.

    dask-cuda's ``LocalCUDACluster`` sets ``CUDA_VISIBLE_DEVICES`` per worker, so each shard
    task sees one GPU as ``cuda:0`` (``TransferConfig.device="auto"``). prefect-dask is pinned;
    ``dask-cuda`` is installed on GPU workers only (``pip install -c constraints.txt dask-cuda``). Use as
    ``transfer_flow.with_options(task_runner=multi_gpu_task_runner())(...)``.
    """
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ImportError(
            "multi_gpu_task_runner needs prefect-dask and dask-cuda: "
            "pip install -c constraints.txt prefect-dask dask-cuda"
        ) from None
    kwargs: dict[str, Any] = {"threads_per_worker": 1}
    if n_gpus is not None:
        kwargs["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n_gpus))
    return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster", cluster_kwargs=kwargs)
