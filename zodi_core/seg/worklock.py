"""One training run per work dir at a time, across processes (issue 9, item 4).

Two runs of the same model (two pipeline runs on one root, a retry beside a live run) share
``train/<model>/seed<N>``: training into it at once would interleave checkpoints and logs. A run
takes an exclusive ``fcntl.flock`` on a lock file before it looks at the work dir; a second run
waits for it, then resumes from (or, when the first finished, returns) what the first left.

The lock file is ``<work_dir>/.zodi-train.lock`` for a local work dir and, for an ``s3://`` work
dir, a file named after the URI's hash in ``<temp dir>/zodi-locks``: runs on one machine wait for
each other. Across machines, an ``s3://`` work dir is guarded by Prefect's cache isolation of the
training task (its lock manager), not by this lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".zodi-train.lock"


def lock_path(work_dir: str) -> Path:
    """Where the lock of ``work_dir`` lives (see the module doc)."""
    if "://" in work_dir:
        digest = hashlib.sha256(work_dir.rstrip("/").encode()).hexdigest()[:24]
        return Path(tempfile.gettempdir()) / "zodi-locks" / f"train-{digest}.lock"
    return Path(work_dir) / LOCK_NAME


@contextlib.contextmanager
def work_dir_lock(work_dir: str, timeout: float | None = None, poll: float = 0.2) -> Iterator[Path]:
    """Hold the exclusive training lock of ``work_dir`` (waiting for another holder).

    Args:
        timeout: give up after this many seconds (None: wait as long as the other run takes).
    Raises:
        TimeoutError: the lock was not free within ``timeout``.
    """
    path = lock_path(work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    print(
                        f"zodi train: another run is training in {work_dir}; waiting for it "
                        f"(lock {path})",
                        file=sys.stderr,
                        flush=True,
                    )
                    told = True
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(
                        f"work dir {work_dir}: another training run held {path} for more than "
                        f"{timeout:.0f} s"
                    ) from None
                time.sleep(poll)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
