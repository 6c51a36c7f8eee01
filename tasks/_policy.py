"""The tasks' retry rule: retry only what may pass."""

from __future__ import annotations

from typing import Any

from zodi_core import storage

#: Errors worth a retry: transient I/O (a connection reset, a timeout, a 5xx, throttling) that
#: botocore's own retries did not outlast. Never bad data, bad config or a
#: :class:`~zodi_core.storage.PermanentStorageError` (credentials, missing bucket, permission).
RETRYABLE = (storage.TransientStorageError, ConnectionError, TimeoutError)


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry only transient I/O errors (see :data:`RETRYABLE`)."""
    return isinstance(state.result(raise_on_failure=False), RETRYABLE)


#: The retries of a task whose storage I/O may meet a passing outage.
IO_RETRIES: dict[str, Any] = dict(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
