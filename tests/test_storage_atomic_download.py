"""S3Storage.get_file publishes through local storage's atomic write (write_atomic): what each
failure of a download raises, and that no temporary file is left behind. A fake boto3 client
answers HEAD and fails the download as the real one would (no server needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from zodi_core.storage import PermanentStorageError, StorageError, TransientStorageError
from zodi_core.storage.s3 import S3Storage

DATA = b"object bytes"


class FakeClient:
    """HEAD says the object exists with DATA's SHA-256; the download writes ``body`` or raises."""

    def __init__(self, body: bytes = DATA, error: Exception | None = None) -> None:
        self.body, self.error = body, error

    def head_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 (boto3's names)
        return {"Metadata": {"sha256": hashlib.sha256(DATA).hexdigest()}}

    def download_fileobj(self, bucket, key, f, Config=None) -> None:  # noqa: N803
        f.write(self.body[:4])  # a partial file on disk before the failure
        if self.error is not None:
            raise self.error
        f.write(self.body[4:])


def _storage(client: FakeClient) -> S3Storage:
    return S3Storage("s3://bucket/prefix", endpoint_url="http://s3.invalid:1", client=client)


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_get_file_publishes_the_checked_download(tmp_path):
    out = _storage(FakeClient()).get_file("k.bin", tmp_path / "sub" / "k.bin")
    assert out.read_bytes() == DATA
    assert _left(out.parent) == ["k.bin"]


def test_get_file_of_an_object_deleted_mid_download_is_file_not_found(tmp_path):
    gone = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    with pytest.raises(FileNotFoundError, match=r"s3://bucket/prefix/k\.bin: no such object"):
        _storage(FakeClient(error=gone)).get_file("k.bin", tmp_path / "k.bin")
    assert _left(tmp_path) == []


def test_get_file_timeout_is_transient_and_names_the_object(tmp_path):
    timeout = ReadTimeoutError(endpoint_url="http://s3.invalid:1")  # an OSError subclass too
    with pytest.raises(TransientStorageError, match=r"s3://bucket/prefix/k\.bin: download failed"):
        _storage(FakeClient(error=timeout)).get_file("k.bin", tmp_path / "k.bin")
    assert _left(tmp_path) == []


def test_get_file_checksum_mismatch_publishes_nothing(tmp_path):
    with pytest.raises(StorageError, match="checksum mismatch"):
        _storage(FakeClient(body=b"other bytes!")).get_file("k.bin", tmp_path / "k.bin")
    assert _left(tmp_path) == []


def test_get_file_local_disk_error_names_the_local_path(tmp_path):
    (tmp_path / "file").write_bytes(b"")  # a file where the destination's folder should be
    with pytest.raises(PermanentStorageError, match=r"file/k\.bin: download failed"):
        _storage(FakeClient()).get_file("k.bin", tmp_path / "file" / "k.bin")
