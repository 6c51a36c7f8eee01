"""One training run per work dir at a time, across processes (issue 9, item 4): two runs of one
model would interleave checkpoints and logs; the second waits, then resumes what the first left.

For an ``s3://`` work dir the lock is per machine; across machines Prefect's cache isolation of
the training task guards it.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import filelock

from zodi_core.seg.resume import say

LOCK_NAME = ".zodi-train.lock"


def lock_path(work_dir: str) -> Path:
    """Where the lock of ``work_dir`` lives: in it, or (``s3://``) in the temp dir by its hash."""
    if "://" in work_dir:
        digest = hashlib.sha256(work_dir.rstrip("/").encode()).hexdigest()[:24]
        return Path(tempfile.gettempdir()) / "zodi-locks" / f"train-{digest}.lock"
    return Path(work_dir) / LOCK_NAME


@contextlib.contextmanager
def work_dir_lock(work_dir: str, timeout: float | None = None) -> Iterator[Path]:
    """Hold the exclusive training lock of ``work_dir`` (filelock's ``flock``), waiting for another
    holder (TimeoutError after ``timeout`` s; None: as long as it takes)."""
    path = lock_path(work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, mode=0o666, poll_interval=0.2)
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        say(f"zodi train: another run is training in {work_dir}; waiting for it (lock {path})")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except filelock.Timeout:
            raise TimeoutError(
                f"work dir {work_dir}: another training run held {path} for more than "
                f"{timeout:.0f} s"
            ) from None
    try:
        yield path
    finally:
        lock.release()
