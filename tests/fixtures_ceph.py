"""A real S3 server for the tests: Ceph's RADOS Gateway on 127.0.0.1 (scripts/ceph_rgw.sh).

``ceph_s3`` starts one single-node cluster per test session (installing the Debian packages first
if they are missing) and stops every daemon it started at the end; ``s3_root`` gives each test its
own prefix in the session's bucket, with the AWS credential variables set for that test only. If
the server cannot start, the fixture fails with the tail of its logs: Ceph tests never skip.
:meth:`CephS3.restart_gateway` stops and restarts only the gateway (an S3 outage, for fault tests).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ceph_rgw.sh"
BUCKET = "zodi-test"
REGION = "us-east-1"


@dataclass(frozen=True)
class CephS3:
    """Where the session's gateway listens, its test user's keys, and the bucket made for tests."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    region: str
    start_seconds: float
    """Wall time of ``ceph_rgw.sh start`` (reported in the session header)."""
    cluster_dir: Path
    """The cluster's folder (``ceph_rgw.sh start DIR``)."""

    def stop_gateway(self) -> None:
        """Stop the gateway only (connections are refused); the monitor and OSD keep running."""
        _gateway_command("stop-gateway", str(self.cluster_dir))

    def start_gateway(self) -> None:
        """Start the gateway again and return once it answers HTTP."""
        _gateway_command("start-gateway", str(self.cluster_dir))

    def restart_gateway(self, down_seconds: float) -> GatewayOutage:
        """Stop the gateway, keep it down ``down_seconds``, start it; return when it answers.

        Safe to call from a background thread: raises RuntimeError (not pytest.fail) on failure.
        """
        t0 = time.monotonic()
        self.stop_gateway()
        stopped = time.monotonic()
        time.sleep(down_seconds)
        self.start_gateway()
        return GatewayOutage(started=t0, stopped=stopped, answering=time.monotonic())


@dataclass(frozen=True)
class GatewayOutage:
    """``time.monotonic()`` marks of one gateway restart."""

    started: float
    """The stop began (requests may fail from here on)."""
    stopped: float
    """The gateway process is gone: connections are refused."""
    answering: float
    """The new gateway answers HTTP again."""

    @property
    def seconds(self) -> float:
        """How long S3 was unavailable, stop to answering."""
        return self.answering - self.started


def _gateway_command(command: str, cluster: str) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), command, cluster],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/ceph_rgw.sh {command} {cluster} failed:\n{proc.stderr[-4000:]}"
        )


def _run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"scripts/ceph_rgw.sh {' '.join(args)} did not finish in {timeout:.0f} s:\n"
            f"{exc.stderr or ''}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def ceph_s3(tmp_path_factory: pytest.TempPathFactory) -> CephS3:
    """Start Ceph RGW once per session; yield its endpoint, keys and an empty bucket."""
    install = _run_script("install", timeout=1200)
    if install.returncode != 0:
        pytest.fail(
            "scripts/ceph_rgw.sh install failed (Ceph tests need radosgw, ceph-mon, ceph-osd "
            f"from Debian):\n{install.stdout}\n{install.stderr[-4000:]}",
            pytrace=False,
        )
    cluster = tmp_path_factory.mktemp("ceph")
    try:
        t0 = time.monotonic()
        start = _run_script("start", str(cluster), timeout=300)
        seconds = time.monotonic() - t0
        if start.returncode != 0:
            pytest.fail(
                f"Ceph RGW test server did not start (scripts/ceph_rgw.sh start {cluster}):\n"
                f"{start.stderr[-6000:]}",
                pytrace=False,
            )
        info = json.loads((cluster / "s3.json").read_text())
        server = CephS3(
            endpoint_url=info["endpoint_url"],
            access_key=info["access_key"],
            secret_key=info["secret_key"],
            bucket=BUCKET,
            region=REGION,
            start_seconds=seconds,
            cluster_dir=cluster,
        )
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5),
        )
        client.create_bucket(Bucket=BUCKET)
        yield server
    finally:
        # Also after a failed or timed-out start: stop kills whatever has a PID file by then.
        stop = _run_script("stop", str(cluster), timeout=120)
        # The 8 GiB sparse OSD file and the monitor store are useless once stopped; logs stay.
        if stop.returncode == 0:
            for sub in ("osd", "mon", "rgw"):
                shutil.rmtree(cluster / sub, ignore_errors=True)


@pytest.fixture
def s3_root(
    ceph_s3: CephS3, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """``s3://<bucket>/<test-name>-<uuid>``: this test's own prefix, with credentials in the env.

    The AWS variables point at the test user only for this test; the user's own ~/.aws files and
    profile are hidden so that nothing but these keys can be picked up.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph_s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", ceph_s3.region)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/zodi-test-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/zodi-test-aws-credentials")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:80]
    return f"s3://{ceph_s3.bucket}/{name}-{uuid.uuid4().hex[:8]}"
