"""Cache locks cannot outlive their holder (issue 22): a lock records its owner (host, pid, start
time); a waiter breaks the lock of a process that is gone — killed for real here with SIGKILL —
and says so in one line; a live holder's lock is kept."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_HOLD = textwrap.dedent(
    """
    import sys, time
    from tasks._cache import LocalLockManager
    assert LocalLockManager().acquire_lock(sys.argv[1], holder="holder-of-the-child")
    print("HELD", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def locks(tmp_path, monkeypatch) -> Path:
    from tasks._cache import release_held_locks

    folder = tmp_path / "locks"
    monkeypatch.setenv("ZODI_LOCKS_DIR", str(folder))
    yield folder
    release_held_locks()  # this process's locks: none survive the test


def _hold_in_child(key: str) -> subprocess.Popen:
    """A real process that takes ``key``'s lock and keeps it (until killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, key],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def test_lock_file_records_its_owner_process(locks):
    from tasks._cache import LocalLockManager, process_start_time

    manager = LocalLockManager()
    assert manager.acquire_lock("k1", holder="me")
    record = json.loads((locks / "k1.lock").read_text())
    assert record["holder"] == "me"  # Prefect's own fields stay
    assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    assert record["started"] == process_start_time(os.getpid()) is not None
    manager.release_lock("k1", holder="me")
    assert not (locks / "k1.lock").exists()
    # Prefect's async engine takes locks through aacquire_lock: recorded the same way
    assert asyncio.run(manager.aacquire_lock("k2", holder="me"))
    assert json.loads((locks / "k2.lock").read_text())["pid"] == os.getpid()


def test_lock_of_a_killed_process_is_broken_with_one_line(locks, capfd):
    from tasks._cache import LocalLockManager

    child = _hold_in_child("shard-key")
    manager = LocalLockManager()
    try:
        # Alive: the lock holds (a waiter times out).
        assert manager.is_locked("shard-key")
        assert not manager.acquire_lock("shard-key", holder="me", acquire_timeout=0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert (locks / "shard-key.lock").exists()  # kill -9 left it behind
    start = time.monotonic()
    assert manager.acquire_lock("shard-key", holder="me", acquire_timeout=30)
    assert time.monotonic() - start < 5, "the waiter did not see that the holder is dead"
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("[lock]")]
    assert len(lines) == 1
    assert f"process {child.pid} on {socket.gethostname()} is gone" in lines[0]
    assert "shard-key.lock" in lines[0]
    assert json.loads((locks / "shard-key.lock").read_text())["pid"] == os.getpid()


def test_owner_gone_tells_dead_reused_foreign_and_unowned_locks_apart():
    from tasks._cache import UNOWNED_GRACE_S, owner_gone, owner_record

    me = owner_record()
    assert owner_gone(me, lock_age_s=3600) is None  # alive, however old
    reused = {**me, "started": me["started"] + 1}  # same pid, another process
    assert "pid now belongs to another process" in owner_gone(reused, 0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert "is gone" in owner_gone({**me, "pid": dead.pid, "started": None}, 0)
    assert owner_gone({**me, "host": "another-machine", "pid": dead.pid}, 3600) is None
    # Prefect's own record (a random holder id, no owner): abandoned once older than the grace
    prefect_only = {"holder": "5f0c3e2a-uuid", "expiration": None}
    assert owner_gone(prefect_only, UNOWNED_GRACE_S / 2) is None
    assert "no recorded owner" in owner_gone(prefect_only, UNOWNED_GRACE_S + 1)


def test_a_lock_left_by_an_older_zodi_is_broken_after_the_grace(locks, capfd):
    """Before issue 22 a lock held only Prefect's ``{"holder": <uuid4>, "expiration": null}``:
    such a file, older than the grace period, no longer blocks a run."""
    from tasks._cache import UNOWNED_GRACE_S, LocalLockManager

    locks.mkdir()
    old = locks / "train-abc.lock"
    old.write_text(
        json.dumps({"holder": "0b9d8c1e-6f2a-4c11-9d0e-2f6b1a7c3e55", "expiration": None})
    )
    past = time.time() - UNOWNED_GRACE_S - 5
    os.utime(old, (past, past))
    assert LocalLockManager().acquire_lock("train-abc", holder="me", acquire_timeout=5)
    assert "no recorded owner" in capfd.readouterr().err


def test_release_held_locks_removes_only_this_process_locks(locks):
    from tasks._cache import LocalLockManager, release_held_locks

    manager = LocalLockManager()
    child = _hold_in_child("theirs")
    try:
        assert manager.acquire_lock("mine-1", holder="a")
        assert manager.acquire_lock("mine-2", holder="b")
        manager.release_lock("mine-2", holder="b")
        released = release_held_locks()
        assert [p.name for p in released] == ["mine-1.lock"]
        assert sorted(p.name for p in locks.glob("*.lock")) == ["theirs.lock"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
