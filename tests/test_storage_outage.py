"""S3 outages for real: the Ceph gateway is stopped and restarted while the storage layer and the
transfer flow are busy (scripts/ceph_rgw.sh restart-gateway), and permanent errors fail fast.

Transient errors are retried in two layers: botocore's "standard" retries inside each request
(zodi_core/storage/s3.py), then Prefect task retries of a transfer shard (tasks/transfer.py).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from zodi_core import storage
from zodi_core.config import DatasetSpec, TransferConfig

pytestmark = [pytest.mark.ceph, pytest.mark.slow]

MiB = 1 << 20


class _Background:
    """Run ``fn`` in a thread; ``result()`` joins it and re-raises what it raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # re-raised in result()
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive()

    def result(self, timeout: float = 300) -> object:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.value


def _outage_over(restart: _Background, latencies: list[tuple[float, float]]) -> bool:
    """The restart is done and three loop iterations started after the gateway answered."""
    if restart.alive():
        return False
    outage = restart.result()  # re-raises a failed restart
    return sum(start > outage.answering for start, _ in latencies) >= 3


def test_storage_outlasts_a_10s_gateway_restart(ceph_s3, s3_root, tmp_path):
    """(a) Puts, gets, heads, lists and multipart uploads in a loop while the gateway is down
    ~10 s: no error surfaces; the request in flight waits for the gateway and then succeeds."""
    st = storage.open_storage(
        s3_root,
        endpoint_url=ceph_s3.endpoint_url,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
    )
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * MiB))  # two parts
    st.put_bytes("warm-up", b"x")
    st.put_file("warm-up-big", big)

    def restart_soon():
        time.sleep(2)  # some iterations first, at normal speed
        return ceph_s3.restart_gateway(down_seconds=10)

    restart = _Background(restart_soon)
    latencies: list[tuple[float, float]] = []
    keys: list[str] = []
    try:
        i = 0
        while not _outage_over(restart, latencies):
            t0 = time.monotonic()
            key, data = f"loop/{i:05d}", os.urandom(2000)
            st.put_bytes(key, data)
            assert st.get_bytes(key) == data
            assert st.exists(key)
            if i % 10 == 0:
                st.put_file(f"big/{i:05d}", big)
                assert st.exists(f"big/{i:05d}")
            keys.append(key)
            latencies.append((t0, time.monotonic()))
            i += 1
    finally:
        outage = restart.result()
    down = outage.answering - outage.stopped
    longest = max(end - start for start, end in latencies)
    print(
        f"\n[outage] gateway down {down:.1f} s ({outage.seconds:.1f} s from stop to answering); "
        f"{len(latencies)} loop iterations; longest {longest:.1f} s; "
        f"typical {sorted(e - s for s, e in latencies)[len(latencies) // 2] * 1000:.0f} ms; "
        f"{[round(e - s, 2) for s, e in latencies]}"
    )
    # The fault hit a request: one iteration waited for the whole outage, and succeeded.
    assert down >= 10
    assert longest >= down - 1.0
    assert list(st.list("loop")) == keys


# -- the transfer flow ------------------------------------------------------------------------


def _transfer_config(models_dir: Path) -> TransferConfig:
    # batch_size=1 and a few more steps: the transfer lasts long enough to be cut mid-way.
    return TransferConfig.preset(
        "demo",
        num_inference_steps=8,
        batch_size=1,
        models={"base": str(models_dir), "controlnet": None},
    )


def _ingest(root: Path, out: Path) -> str:
    from flows.ingest import ingest_flow

    spec = DatasetSpec(dataset="cityscapes", root=str(root / "cityscapes"), split="train")
    (uri,) = ingest_flow([spec], str(out)).values()
    return uri


def _png_times(ceph_s3, s3_root: str) -> list[float]:
    """Wall-clock upload times (``LastModified``) of the PNGs under ``s3_root``."""
    import boto3
    from botocore.config import Config

    bucket, _, prefix = s3_root.removeprefix("s3://").partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=ceph_s3.endpoint_url,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return [
        o["LastModified"].timestamp()
        for page in pages
        for o in page.get("Contents", [])
        if o["Key"].endswith(".png")
    ]


def _restart_after_first_image(ceph_s3, s3_root: str, down_seconds: float) -> dict:
    """Wait until the flow uploaded its first image, then restart the gateway."""
    deadline = time.monotonic() + 300
    while not _png_times(ceph_s3, s3_root):
        if time.monotonic() > deadline:
            raise RuntimeError("no image was uploaded in 300 s")
        time.sleep(0.2)
    stopped_wall = time.time()
    outage = ceph_s3.restart_gateway(down_seconds)
    return {"outage": outage, "stopped_wall": stopped_wall}


def _task_run_counts(flow_state) -> dict[str, int]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name: r.run_count for r in runs if r.name.startswith("transfer-")}


def _check_complete_run(state, ceph_s3, s3_root: str, n_images: int) -> dict:
    import pyarrow.parquet as pq

    assert state.is_completed(), state.message
    result = state.result()
    summary = result["domains"]["night"]
    assert summary["shards_failed"] == {}
    assert summary["images_failed"] == 0
    assert summary["images_written"] + summary["images_skipped"] == n_images
    # The paired manifest is complete: one row per sample, each pointing at an image in S3.
    paired = result["paired"]["night"]
    rows = pq.read_table(io.BytesIO(storage.read_bytes(paired))).to_pylist()
    assert len(rows) == n_images
    assert len({r["sample_id"] for r in rows}) == n_images
    for r in rows:
        assert r["generated_uri"].startswith(s3_root + "/")
        assert storage.exists(r["generated_uri"]), r["generated_uri"]
    return summary


@pytest.mark.parametrize(
    "down_seconds, storage_attempts",
    [
        # botocore's retries (and, when they run out, the task's) outlast a 30 s restart;
        pytest.param(30, None, id="30s-outage"),
        # with botocore's retries off, the Prefect task retries alone outlast a 10 s restart.
        pytest.param(10, 1, id="10s-outage-task-retries-only"),
    ],
)
def test_transfer_flow_outlasts_a_gateway_restart_mid_transfer(
    prefect_harness, synthetic_root, tiny_models_dir, ceph_s3, s3_root, tmp_path,
    down_seconds, storage_attempts,
):  # fmt: skip
    """(b) A gateway restart mid-transfer: the run ends with 0 failed shards and a complete
    paired manifest."""
    from flows.transfer import transfer_flow

    samples_uri = _ingest(synthetic_root, tmp_path / "manifests")
    config = _transfer_config(tiny_models_dir)
    restart = _Background(lambda: _restart_after_first_image(ceph_s3, s3_root, down_seconds))
    t0 = time.monotonic()
    try:
        # The S3 options reach every task of the run through the context, not os.environ.
        with storage.use_options(endpoint_url=ceph_s3.endpoint_url, max_attempts=storage_attempts):
            state = transfer_flow(
                samples_uri, ["night"], s3_root, config, shard_size=2, return_state=True
            )
    finally:
        marks = restart.result()
    seconds = time.monotonic() - t0
    with storage.use_options(endpoint_url=ceph_s3.endpoint_url):
        summary = _check_complete_run(state, ceph_s3, s3_root, n_images=8)
        times = _png_times(ceph_s3, s3_root)
    outage, stopped_wall = marks["outage"], marks["stopped_wall"]
    runs = _task_run_counts(state)
    print(
        f"\n[outage] gateway down {outage.answering - outage.stopped:.1f} s mid-transfer; "
        f"flow {seconds:.1f} s; task runs {runs}; summary {summary}"
    )
    # The restart really hit the transfer mid-way: images before it, and images after it.
    assert any(t < stopped_wall for t in times)
    assert any(t > stopped_wall + 2 for t in times)
    assert len(runs) == 4
    if storage_attempts == 1:
        assert max(runs.values()) >= 2, "without botocore retries, a task retry must have run"


def test_transfer_flow_fails_fast_on_wrong_credentials(
    prefect_harness, synthetic_root, tiny_models_dir, ceph_s3, s3_root, tmp_path, monkeypatch
):
    """(c) A permanent error is not retried: no task retry, one line naming the problem."""
    from flows.transfer import transfer_flow

    samples_uri = _ingest(synthetic_root, tmp_path / "manifests")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    t0 = time.monotonic()
    with storage.use_options(endpoint_url=ceph_s3.endpoint_url):
        state = transfer_flow(
            samples_uri, ["night"], s3_root, _transfer_config(tiny_models_dir), shard_size=4,
            return_state=True,
        )  # fmt: skip
    seconds = time.monotonic() - t0
    assert state.is_failed()
    failed = state.result(raise_on_failure=False)["domains"]["night"]["shards_failed"]
    assert sorted(failed) == ["shard-00000", "shard-00001"]
    for message in failed.values():
        # (A HEAD's 403 has no body, so it cannot tell bad keys from a missing permission.)
        assert "AWS_SECRET_ACCESS_KEY" in message and "\n" not in message
        assert "wrong-secret" not in message
    assert set(_task_run_counts(state).values()) == {1}, "a permanent error is never retried"
    print(f"\n[outage] wrong credentials: flow failed in {seconds:.1f} s")
    assert seconds < 30  # no retry delay (the first one is 10 s) was waited
