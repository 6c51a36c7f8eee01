"""Storage on a local folder and on a real S3 server (Ceph RGW, see fixtures_ceph.py)."""

from __future__ import annotations

import contextvars
import errno
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from zodi_core import storage as storage_mod
from zodi_core.storage import (
    LocalStorage,
    PermanentStorageError,
    Storage,
    StorageError,
    TransientStorageError,
    open_storage,
)
from zodi_core.storage import local as local_mod

MiB = 1 << 20


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.ceph)])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Storage]:
    """``make_storage(name="main", **s3_options)``: a Storage on this test's own root ``name``.

    Roots of one test are siblings (``.../main``, ``.../mainx``), so isolation can be checked.
    ``s3_options`` (multipart sizes, ...) apply to the S3 backend only.
    """
    if request.param == "local":
        return lambda name="main", **s3_options: open_storage(tmp_path / name)
    s3_root = request.getfixturevalue("s3_root")
    endpoint = request.getfixturevalue("ceph_s3").endpoint_url

    def make(name: str = "main", **s3_options) -> Storage:
        return open_storage(f"{s3_root}/{name}", endpoint_url=endpoint, **s3_options)

    return make


@pytest.fixture
def ceph_storage(s3_root: str, ceph_s3) -> Storage:
    return open_storage(s3_root, endpoint_url=ceph_s3.endpoint_url)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- both backends --------------------------------------------------------------------------------


def test_storage_round_trip_bytes(make_storage):
    st = make_storage()
    data = os.urandom(1000)
    uri = st.put_bytes("a/b/c.bin", data)
    assert uri.endswith("main/a/b/c.bin")
    assert st.get_bytes("a/b/c.bin") == data


def test_storage_round_trip_file(make_storage, tmp_path):
    st = make_storage()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    st.put_file("dir/f.bin", src)
    out = st.get_file("dir/f.bin", tmp_path / "out" / "f.bin")
    assert out.read_bytes() == src.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["f.bin"]  # no temporary file left


def test_storage_multipart_20mb_round_trip(make_storage, tmp_path):
    st = make_storage(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    src = tmp_path / "big.bin"
    data = os.urandom(20 * MiB)
    src.write_bytes(data)
    st.put_file("big.bin", src)
    out = st.get_file("big.bin", tmp_path / "big.out")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    if st.root.startswith("s3://"):
        # A multipart object's ETag is "<md5 of part md5s>-<number of parts>": 20 MiB / 8 MiB = 3.
        head = st.client.head_object(Bucket=st.bucket, Key=st._key("big.bin"))
        assert head["ETag"].strip('"').endswith("-3")
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_storage_list_own_prefix_sorted(make_storage):
    st, sibling = make_storage("main"), make_storage("mainx")
    for key in ["b/x", "a/2", "a/1", "ab", "a/sub/3"]:
        st.put_bytes(key, b"1")
    sibling.put_bytes("a/9", b"1")  # shares the string prefix "main", not the folder
    assert list(st.list()) == ["a/1", "a/2", "a/sub/3", "ab", "b/x"]
    assert list(st.list("a")) == ["a/1", "a/2", "a/sub/3"]
    assert list(st.list("ab")) == ["ab"]
    assert list(st.list("nothing")) == []
    assert list(sibling.list()) == ["a/9"]


def test_storage_missing_key_names_it(make_storage, tmp_path):
    st = make_storage()
    with pytest.raises(FileNotFoundError, match=r"main/no/such\.bin"):
        st.get_bytes("no/such.bin")
    with pytest.raises(FileNotFoundError, match=r"main/no/such\.bin"):
        st.get_file("no/such.bin", tmp_path / "never-written")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/abs", "/etc/passwd", ""])
def test_storage_prefix_escape_refused(make_storage, key):
    st = make_storage()
    with pytest.raises(StorageError, match="absolute|escape|non-empty"):
        st.put_bytes(key, b"no")
    with pytest.raises(StorageError):
        st.get_bytes(key)


def test_storage_exists_and_delete(make_storage):
    st = make_storage()
    assert not st.exists("k")
    st.put_bytes("k", b"v")
    assert st.exists("k")
    st.delete("k")
    assert not st.exists("k")
    assert list(st.list()) == []
    st.delete("k")  # deleting a missing key is not an error


# -- local only ------------------------------------------------------------------------------------


def test_local_put_file_failing_writer_leaves_old_object(tmp_path, monkeypatch):
    st = LocalStorage(tmp_path / "root")
    st.put_bytes("obj", b"old")
    src = tmp_path / "src"
    src.write_bytes(b"new" * 1000)

    def copy_then_fail(fsrc, fdst, length=0):
        fdst.write(fsrc.read(100))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(local_mod.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(PermanentStorageError, match="obj: write failed: disk full"):
        st.put_file("obj", src)
    assert st.get_bytes("obj") == b"old"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["obj"]  # no .part left


def test_local_put_bytes_failing_fsync_leaves_no_object(tmp_path, monkeypatch):
    st = LocalStorage(tmp_path / "root")

    def fail(fd):
        raise OSError(errno.EIO, "Input/output error (simulated)")

    monkeypatch.setattr(local_mod.os, "fsync", fail)
    with pytest.raises(TransientStorageError, match="d/obj: write failed: Input/output error"):
        st.put_bytes("d/obj", b"data")
    assert not st.exists("d/obj")
    assert list((tmp_path / "root" / "d").iterdir()) == []


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process umask for this test; the old one is restored after."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_local_files_get_the_process_umask(umask, tmp_path, mask):
    umask(mask)
    st = LocalStorage(tmp_path / "root")
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    written = [
        Path(st.put_bytes("a/bytes.bin", b"data")),
        Path(st.put_file("a/file.bin", src)),
        st.get_file("a/bytes.bin", tmp_path / "out" / "copy.bin"),
    ]
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


@pytest.mark.parametrize(
    "code, expected, words",
    [
        (errno.ENOSPC, PermanentStorageError, "no space left on the device: free space"),
        (errno.EDQUOT, PermanentStorageError, "quota"),
        (errno.EACCES, PermanentStorageError, "permission denied: check the folder's owner"),
        (errno.EROFS, PermanentStorageError, "read-only file system"),
        (errno.EIO, TransientStorageError, "retry later"),
        (errno.ESTALE, TransientStorageError, "retry later"),
    ],
)
def test_local_os_errors_classified(tmp_path, monkeypatch, code, expected, words):
    st = LocalStorage(tmp_path / "root")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_mod.os, "fsync", failing_fsync)
    with pytest.raises(expected, match=rf"root/k\.bin: write failed: .*{words}") as info:
        st.put_bytes("k.bin", b"data")
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == code
    assert list((tmp_path / "root").iterdir()) == []  # no temp file left


# -- S3 ----------------------------------------------------------------------------------------------


def test_s3_import_and_open_do_not_touch_boto3():
    code = (
        "import sys; from zodi_core.storage import open_storage; "
        "st = open_storage('s3://bucket/p', endpoint_url='http://127.0.0.1:1'); "
        "print(type(st).__name__, 'boto3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["S3Storage", "False"]


@pytest.fixture
def fake_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_s3_unreachable_endpoint_is_transient_and_names_it(fake_credentials):
    # Connection refused may pass (a gateway restart): botocore retries it, then it is raised as
    # transient. max_attempts=2 keeps this test fast; the default budget is measured in
    # test_storage_outage.py.
    port = _closed_port()
    st = open_storage("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2)
    t0 = time.monotonic()
    with pytest.raises(
        TransientStorageError, match=rf"s3://bucket/p/k: .*cannot reach http://127.0.0.1:{port}"
    ) as info:
        st.get_bytes("k")
    assert time.monotonic() - t0 < 5, "two attempts wait at most 1 s of backoff"
    assert "\n" not in str(info.value) and "after 2 attempt(s)" in str(info.value)


def test_s3_client_retries_transient_errors_in_botocore_standard_mode(fake_credentials):
    st = open_storage("s3://bucket/p", endpoint_url="http://127.0.0.1:1")
    config = st.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 14}
    assert (config.connect_timeout, config.read_timeout) == (3.0, 60.0)
    # One client per endpoint, options and credentials, shared by every storage on it.
    assert open_storage("s3://other/q", endpoint_url="http://127.0.0.1:1").client is st.client
    assert open_storage("s3://bucket/p", endpoint_url="http://127.0.0.1:2").client is not st.client


def _client_error(code: str, status: int, operation: str = "PutObject"):
    from botocore.exceptions import ClientError

    response = {
        "Error": {"Code": code, "Message": f"{code} (test)\nsecond line"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


def _boto_errors() -> dict[str, tuple[BaseException, type[Exception], str]]:
    """name: (error raised by boto3, expected class, expected words)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
        SSLError,
    )

    def upload_failed(inner: BaseException) -> BaseException:
        try:
            raise inner
        except Exception:
            try:
                raise S3UploadFailedError("Failed to upload (test)")
            except S3UploadFailedError as outer:
                return outer

    return {
        "connection refused": (
            EndpointConnectionError(endpoint_url="http://h:1/b/k"), TransientStorageError,
            "cannot reach",
        ),
        "connect timeout": (
            ConnectTimeoutError(endpoint_url="http://h:1"), TransientStorageError, "cannot reach"
        ),
        "read timeout": (
            ReadTimeoutError(endpoint_url="http://h:1"), TransientStorageError, "cannot reach"
        ),
        "reset": (ConnectionResetError(104, "reset by peer"), TransientStorageError, "reset"),
        "503 SlowDown": (_client_error("SlowDown", 503), TransientStorageError, "busy"),
        "500 InternalError": (_client_error("InternalError", 500), TransientStorageError, "busy"),
        "429": (_client_error("TooManyRequests", 429), TransientStorageError, "busy"),
        "RequestTimeout": (_client_error("RequestTimeout", 400), TransientStorageError, "busy"),
        "Throttling in an upload": (
            upload_failed(_client_error("Throttling", 400)), TransientStorageError, "busy",
        ),
        "no credentials": (NoCredentialsError(), PermanentStorageError, "AWS_ACCESS_KEY_ID"),
        "bad key id": (
            _client_error("InvalidAccessKeyId", 403), PermanentStorageError, "credentials"
        ),
        "bad signature": (
            _client_error("SignatureDoesNotMatch", 403), PermanentStorageError, "credentials"
        ),
        "denied": (_client_error("AccessDenied", 403), PermanentStorageError, "bucket policy"),
        "no bucket": (_client_error("NoSuchBucket", 404), PermanentStorageError, "create it"),
        "denied in an upload": (
            upload_failed(_client_error("AccessDenied", 403)), PermanentStorageError, "denied",
        ),
        "bad argument": (_client_error("InvalidArgument", 400), PermanentStorageError, "Invalid"),
        "TLS": (SSLError(endpoint_url="https://h", error="bad cert"), PermanentStorageError,
                "certificate"),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_boto_errors()))
def test_s3_errors_classified_transient_or_permanent_in_one_line(name):
    raised, expected, words = _boto_errors()[name]
    st = open_storage("s3://bucket/p", endpoint_url="http://127.0.0.1:1")
    err = st._error(raised, "dir/k.png", "PUT")
    assert type(err) is expected
    msg = str(err)
    assert msg.startswith("s3://bucket/p/dir/k.png: PUT failed: ")
    assert words in msg and "\n" not in msg


def test_s3_missing_key_is_file_not_found():
    st = open_storage("s3://bucket/p", endpoint_url="http://127.0.0.1:1")
    err = st._error(_client_error("NoSuchKey", 404, "GetObject"), "k", "GET")
    assert isinstance(err, FileNotFoundError) and "s3://bucket/p/k" in str(err)


def test_storage_options_passed_explicitly_never_through_environ(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    environ = dict(os.environ)
    assert open_storage("s3://b/p").endpoint_url is None
    st = open_storage("s3://b/p", endpoint_url="http://a:1", region="eu-west-3")
    assert (st.endpoint_url, st.region) == ("http://a:1", "eu-west-3")
    with storage_mod.use_options(endpoint_url="http://flow:1", region="ap-south-1"):
        st = open_storage("s3://b/p")
        assert (st.endpoint_url, st.region) == ("http://flow:1", "ap-south-1")
        # An explicit argument wins over the flow's defaults; None means "not given".
        st = open_storage("s3://b/p", endpoint_url="http://a:1", region=None)
        assert (st.endpoint_url, st.region) == ("http://a:1", "ap-south-1")
        st = open_storage("s3://b/p")
        assert (st.endpoint_url, st.region) == ("http://flow:1", "ap-south-1")
    assert open_storage("s3://b/p").endpoint_url is None  # the scope is gone

    def unscoped() -> dict:
        storage_mod.use_options(endpoint_url="http://old:1")  # set without a with block
        st = open_storage("s3://b/p")
        return {"endpoint_url": st.endpoint_url, "region": st.region}

    # In a copy of the context, as a flow run is: nothing leaks into this test's context.
    seen = contextvars.copy_context().run(unscoped)
    assert seen == {"endpoint_url": "http://old:1", "region": None}
    st = open_storage("s3://b/p")
    assert (st.endpoint_url, st.region, st.max_attempts) == (None, None, 14)
    assert dict(os.environ) == environ


def test_storage_options_reach_threads_started_from_the_context():
    from concurrent.futures import ThreadPoolExecutor

    with storage_mod.use_options(endpoint_url="http://flow:1"), ThreadPoolExecutor(1) as pool:
        # Prefect's thread task runner submits every task in a copy of the caller's context.
        ctx = contextvars.copy_context()
        seen = pool.submit(ctx.run, lambda: open_storage("s3://b/p").endpoint_url).result()
    assert seen == "http://flow:1"


def test_storage_config_gives_the_options():
    from zodi_core.config import StorageConfig

    assert StorageConfig(root="s3://b/p").storage_options() == {}
    config = StorageConfig(root="s3://b/p", endpoint_url="http://c:1", region="eu-west-3")
    assert config.storage_options() == {"endpoint_url": "http://c:1", "region": "eu-west-3"}
    st = open_storage(config.root, **config.storage_options())
    assert (st.endpoint_url, st.region) == ("http://c:1", "eu-west-3")
    assert st.client.meta.region_name == "eu-west-3"


def test_s3_bad_root_refused():
    with pytest.raises(StorageError, match="no bucket"):
        open_storage("s3:///prefix")
    with pytest.raises(StorageError, match="escape"):
        open_storage("s3://bucket/../other")


class _RequestCounter:
    """Counts the HTTP requests a (shared) boto3 client sends while in the ``with`` block."""

    def __init__(self, client) -> None:
        self.client, self.sent = client, 0

    def _count(self, **kwargs) -> None:
        self.sent += 1

    def __enter__(self) -> _RequestCounter:
        self.client.meta.events.register("before-send.s3", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister("before-send.s3", self._count)


@pytest.mark.ceph
@pytest.mark.parametrize("which", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_s3_wrong_credentials_fail_fast_without_retry(ceph_storage, ceph_s3, monkeypatch, which):
    ceph_storage.put_bytes("k", b"v")
    bad = "wrong-" + ceph_s3.secret_key[:4]
    monkeypatch.setenv(which, bad)
    st = open_storage(ceph_storage.root, endpoint_url=ceph_s3.endpoint_url)
    assert st.client is not ceph_storage.client  # built before the clock: the bound is on requests
    for call in (
        lambda: st.put_bytes("k2", b"v"),
        lambda: st.exists("k"),
        lambda: st.get_bytes("k"),
    ):
        t0 = time.monotonic()
        with (
            _RequestCounter(st.client) as requests,
            pytest.raises(PermanentStorageError, match="credentials") as info,
        ):
            call()
        assert time.monotonic() - t0 < 2
        assert requests.sent == 1, "a permanent error is never retried"
        assert ceph_storage.root in str(info.value) and "\n" not in str(info.value)
        assert ceph_s3.secret_key not in str(info.value) and bad not in str(info.value)


@pytest.mark.ceph
def test_s3_missing_bucket_fails_fast_without_retry(s3_root, ceph_s3):
    st = open_storage("s3://zodi-no-such-bucket/p", endpoint_url=ceph_s3.endpoint_url)
    for call in (
        lambda: st.get_bytes("k"),
        lambda: st.put_bytes("k", b"v"),
        lambda: st.exists("k"),  # HEAD object (404), then HEAD bucket (404)
        lambda: list(st.list()),
    ):
        t0 = time.monotonic()
        with (
            _RequestCounter(st.client) as requests,
            pytest.raises(
                PermanentStorageError, match="bucket 'zodi-no-such-bucket' does not exist"
            ) as info,
        ):
            call()
        assert time.monotonic() - t0 < 2
        assert requests.sent <= 2, "a permanent error is never retried"
        assert "create it or fix the storage root" in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.ceph
def test_s3_corrupt_object_detected_on_read(ceph_storage, tmp_path):
    ceph_storage.put_bytes("k", b"good")
    # Overwrite the bytes behind the storage's back, keeping a stale checksum.
    ceph_storage.client.put_object(
        Bucket=ceph_storage.bucket,
        Key=ceph_storage._key("k"),
        Body=b"evil",
        Metadata={"sha256": hashlib.sha256(b"good").hexdigest()},
    )
    with pytest.raises(StorageError, match="checksum mismatch"):
        ceph_storage.get_bytes("k")
    with pytest.raises(StorageError, match="checksum mismatch"):
        ceph_storage.get_file("k", tmp_path / "k")
    assert not (tmp_path / "k").exists()


class _FailingStream:
    """A readable stream that breaks after ``limit`` bytes, like a dying producer."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise OSError("producer died (simulated)")
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"x" * n


@pytest.mark.ceph
def test_s3_failed_multipart_upload_stays_invisible(s3_root, ceph_s3):
    st = open_storage(
        s3_root,
        endpoint_url=ceph_s3.endpoint_url,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
    )
    st.put_bytes("obj", b"old")
    with pytest.raises(StorageError, match=r"obj: upload failed: .*producer died"):
        st.put_stream("obj", _FailingStream(12 * MiB))
    assert st.get_bytes("obj") == b"old"
    uploads = st.client.list_multipart_uploads(Bucket=st.bucket, Prefix=st.prefix)
    assert uploads.get("Uploads", []) == []  # boto3 aborted the parts it had sent
