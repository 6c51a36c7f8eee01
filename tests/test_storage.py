"""Storage on a local folder and on a real S3 server (Ceph RGW, see fixtures_ceph.py)."""

from __future__ import annotations

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
from zodi_core.storage import LocalStorage, Storage, StorageError, open_storage

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
    assert st.get_bytes_checked("a/b/c.bin", hashlib.sha256(data).hexdigest()) == data
    with pytest.raises(StorageError, match="checksum mismatch"):
        st.get_bytes_checked("a/b/c.bin", hashlib.sha256(b"other").hexdigest())


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

    monkeypatch.setattr(storage_mod.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        st.put_file("obj", src)
    assert st.get_bytes("obj") == b"old"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["obj"]  # no .part left


def test_local_put_bytes_failing_fsync_leaves_no_object(tmp_path, monkeypatch):
    st = LocalStorage(tmp_path / "root")

    def fail(fd):
        raise OSError("I/O error (simulated)")

    monkeypatch.setattr(storage_mod.os, "fsync", fail)
    with pytest.raises(OSError, match="I/O error"):
        st.put_bytes("d/obj", b"data")
    assert not st.exists("d/obj")
    assert list((tmp_path / "root" / "d").iterdir()) == []


# -- S3 ----------------------------------------------------------------------------------------------


def test_s3_import_and_open_do_not_touch_boto3():
    code = (
        "import sys; from zodi_core.storage import open_storage; "
        "st = open_storage('s3://bucket/p', endpoint_url='http://127.0.0.1:1'); "
        "print(type(st).__name__, 'boto3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["S3Storage", "False"]


def test_s3_unreachable_endpoint_fails_fast(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = _closed_port()
    st = open_storage("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(
        StorageError, match=rf"s3://bucket/p/k: .*cannot reach http://127.0.0.1:{port}"
    ):
        st.get_bytes("k")
    assert time.monotonic() - t0 < 20, "an unreachable endpoint must fail in seconds"


def test_s3_bad_root_refused():
    with pytest.raises(StorageError, match="no bucket"):
        open_storage("s3:///prefix")
    with pytest.raises(StorageError, match="escape"):
        open_storage("s3://bucket/../other")


@pytest.mark.ceph
@pytest.mark.parametrize("which", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_s3_wrong_credentials_say_so(ceph_storage, ceph_s3, monkeypatch, which):
    ceph_storage.put_bytes("k", b"v")
    bad = "wrong-" + ceph_s3.secret_key[:4]
    monkeypatch.setenv(which, bad)
    st = open_storage(ceph_storage.root, endpoint_url=ceph_s3.endpoint_url)
    for call in (
        lambda: st.put_bytes("k2", b"v"),
        lambda: st.exists("k"),
        lambda: st.get_bytes("k"),
    ):
        with pytest.raises(StorageError, match="credentials") as info:
            call()
        assert ceph_storage.root in str(info.value)
        assert ceph_s3.secret_key not in str(info.value) and bad not in str(info.value)


@pytest.mark.ceph
def test_s3_missing_bucket_says_so(s3_root, ceph_s3):
    st = open_storage("s3://zodi-no-such-bucket/p", endpoint_url=ceph_s3.endpoint_url)
    for call in (lambda: st.get_bytes("k"), lambda: st.exists("k"), lambda: list(st.list())):
        with pytest.raises(StorageError, match="bucket 'zodi-no-such-bucket' does not exist"):
            call()


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
