"""tasks/_policy.py: which failed states a task retries (through the function, with real states)."""

from __future__ import annotations

import socket

import pytest

from zodi_core import storage


def _raised(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def storage_errors(monkeypatch) -> dict[str, BaseException]:
    """Errors raised by the storage layer itself, one of each kind."""
    from botocore.exceptions import ClientError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = storage.open_storage(
        "s3://bucket/p", endpoint_url=f"http://127.0.0.1:{_closed_port()}", max_attempts=1
    )
    denied = ClientError(
        {"Error": {"Code": "InvalidAccessKeyId"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "PutObject",
    )
    return {
        "connection refused": _raised(lambda: s3.get_bytes("k")),
        "wrong credentials": s3._error(denied, "k", "PUT"),
        "prefix escape": _raised(lambda: s3.put_bytes("../k", b"")),
    }


def _failed(exc: BaseException):
    from prefect.states import Failed

    return Failed(data=exc)


def test_retry_on_io_retries_transient_storage_errors(storage_errors):
    from tasks._policy import retry_on_io

    refused = storage_errors["connection refused"]
    assert isinstance(refused, storage.TransientStorageError)
    assert retry_on_io(None, None, _failed(refused))
    assert retry_on_io(None, None, _failed(storage.TransientStorageError("s3://b/k: SlowDown")))
    assert retry_on_io(None, None, _failed(ConnectionResetError(104, "reset by peer")))
    assert retry_on_io(None, None, _failed(TimeoutError("timed out")))


def test_retry_on_io_never_retries_permanent_errors(storage_errors):
    from prefect.states import Completed

    from tasks._policy import retry_on_io

    for name in ("wrong credentials", "prefix escape"):
        assert isinstance(storage_errors[name], storage.PermanentStorageError), name
        assert not retry_on_io(None, None, _failed(storage_errors[name])), name
    # An unclassified storage error, bad data and bad config are not retried either.
    assert not retry_on_io(None, None, _failed(storage.StorageError("s3://b/k: ?")))
    assert not retry_on_io(None, None, _failed(FileNotFoundError("s3://b/k: no such object")))
    assert not retry_on_io(None, None, _failed(ValueError("corrupt PNG")))
    assert not retry_on_io(None, None, Completed(data=1))


def test_transfer_shard_task_retries_transient_errors_only():
    from tasks._policy import retry_on_io
    from tasks.transfer import transfer_shard_task

    assert transfer_shard_task.retries >= 2
    assert transfer_shard_task.retry_condition_fn is retry_on_io
    delays = transfer_shard_task.retry_delay_seconds
    delays = delays if isinstance(delays, list) else [delays] * transfer_shard_task.retries
    # With botocore's own retries first, the task's delays alone outlast a 30 s gateway restart.
    assert sum(delays) >= 30
