"""Scale-out of one domain's transfer: across machines, child runs of the ``transfer_flow``
deployment (:func:`fanout_transfer_flow`); on one multi-GPU machine, a Dask task runner with one
worker per GPU (:func:`multi_gpu_task_runner`)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from tasks.fanout import launch_child_run_task, wait_for_flow_runs_task
from tasks.transfer import merge_shard_manifests_task, shard_manifest_task
from zodi_core import fanout, layout, sharding
from zodi_core.config import TransferConfig
from zodi_core.config.pipeline import DEFAULT_SHARD_SIZE


@flow(name="fanout_transfer_flow")
def fanout_transfer_flow(
    samples_uri: str,
    domain: str,
    out_root: str,
    transfer: TransferConfig,
    shard_size: int = DEFAULT_SHARD_SIZE,
    shards_per_run: int = 4,
    deployment: str = "transfer_flow/transfer-local",
    child_retries: int = 1,
    poll_seconds: float = 2.0,
    timeout_seconds: float = 6 * 3600,
) -> Any:
    """Transfer one domain as child runs of ``deployment`` (one per ``shards_per_run`` shards),
    rerun failed children alone, then merge; return ``{"domain", "paired", "summary",
    "children"}``, or a Failed state with it as data when a child fails every attempt."""
    config = transfer.replace(domain=domain)
    # 1. shard exactly as every child will (sorted by sample_id: deterministic)
    shards = shard_manifest_task(samples_uri, shard_size)
    groups = sharding.group_shards(len(shards), shards_per_run)

    def launch(group: list[int], attempt: int) -> str:
        params = fanout.child_parameters(samples_uri, domain, out_root, config, shard_size, group)
        name = fanout.child_run_name(domain, group, attempt)
        return launch_child_run_task(deployment, params, name)

    def wait(ids: list[str]) -> dict[str, dict[str, Any]]:
        return wait_for_flow_runs_task(ids, poll_seconds, timeout_seconds)

    # 2-3. one child per group, all at once; wait; rerun only the failed children
    report = fanout.run_children(groups, launch, wait, child_retries, domain)
    summary = fanout.merge_child_summaries(report)
    # 4. merge the shard manifests of every shard (the same URIs the children wrote)
    paired = None
    if not report.failed():
        uris = [sharding.shard_manifest_uri(out_root, s, config) for s in shards]
        out = layout.paired_manifest_uri(out_root, domain)
        paired = merge_shard_manifests_task(uris, out, domain)["uri"]
    result = fanout.fanout_result(domain, report, summary, paired)
    # 5. summary; fail naming the children (and their shards) that failed every attempt
    get_run_logger().info("%s: %d children, %s", domain, len(groups), summary.line())
    if report.failed():
        return Failed(message=fanout.failure_message(report), data=result)
    return result


def multi_gpu_task_runner(n_gpus: int | None = None) -> Any:
    """A Dask task runner with one single-threaded worker per GPU of this machine (dask-cuda sets
    ``CUDA_VISIBLE_DEVICES`` per worker: each shard task sees its GPU as ``cuda:0``)."""
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
