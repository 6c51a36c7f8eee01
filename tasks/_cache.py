"""The tasks' caching: one cache-key rule, storage-checked cache hits (a record whose outputs
storage lost is refreshed: :func:`run_fresh`), and SERIALIZABLE locks shared by this machine's
processes (:class:`LocalLockManager`): one run computes a key, an identical one waits for the hit;
a lock whose owner (host, pid, start time) is gone is broken, in one stderr line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.results import get_result_store
from prefect.settings import get_current_settings
from prefect.transactions import IsolationLevel
from prefect.utilities.callables import get_call_parameters

from zodi_core import storage

#: Environment variable naming the lock folder (default: ``$PREFECT_HOME/locks``).
LOCKS_ENV = "ZODI_LOCKS_DIR"
#: A lock file without an owner record (an older zodi, or a process killed between creating the
#: file and recording itself) counts as abandoned after this many seconds.
UNOWNED_GRACE_S = 30.0


def cache_key(kind: str, *parts: str) -> str:
    """``<kind>-<digest of parts>``: the rule of every task's cache key (each beside its task)."""
    return f"{kind}-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def content_digest(*uris: str) -> str:
    """Digest of the bytes behind some URIs (manifests, config files), for cache keys."""
    h = hashlib.sha256()
    for uri in uris:
        h.update(uri.encode() + b"\0" + storage.read_bytes(uri) + b"\0")
    return h.hexdigest()[:24]


def locks_dir() -> Path:
    """Folder of the cache lock files, read when a lock is taken (never at import)."""
    default = Path(get_current_settings().home) / "locks"
    return Path(os.environ.get(LOCKS_ENV) or default).expanduser()


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (``/proc/<pid>/stat`` field 22), or None where there is no
    such process: with the pid, it names one process (a reused pid has another start time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return int(stat.rpartition(")")[2].split()[19])


def owner_record() -> dict[str, Any]:
    """What identifies this process as a lock's owner: host, pid and start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_start_time(pid)}


def owner_gone(info: dict[str, Any], lock_age_s: float) -> str | None:
    """Why a lock's owner no longer holds it (e.g. ``process 123 on host-a is gone``), or None
    while it may still be alive (or lives on another host: its lock waits for that host)."""
    host, pid, started = info.get("host"), info.get("pid"), info.get("started")
    if host is None or not isinstance(pid, int):
        return f"no recorded owner for {lock_age_s:.0f} s" if lock_age_s > UNOWNED_GRACE_S else None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} on {host} is gone"
    except PermissionError:
        pass  # alive, another user's
    if started is not None and process_start_time(pid) not in (None, started):
        return f"process {pid} on {host} is gone (the pid now belongs to another process)"
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):  # gone, or being written (Prefect creates, then writes)
        return {}


class LocalLockManager(FileSystemLockManager):
    """Prefect's lock files, in :func:`locks_dir`, that cannot outlive the process holding them
    (across machines use one all reach, e.g. prefect-redis's expiring ``RedisLockManager``)."""

    def __init__(self) -> None:
        self._locks = {}  # not FileSystemLockManager's: its folder is read when a lock is taken

    @property
    def lock_files_directory(self) -> Path:  # type: ignore[override]
        return locks_dir().resolve()

    def _get_lock_info(self, key: str, use_cache: bool = True):  # type: ignore[override]
        try:
            return super()._get_lock_info(key, use_cache=use_cache)
        except ValueError:  # a lock file being written: locked, owner not recorded yet
            return {"holder": "", "expiration": None, "path": self._lock_path_for_key(key)}

    def acquire_lock(self, key: str, holder: str, *args: Any, **kwargs: Any) -> bool:
        return super().acquire_lock(key, holder, *args, **kwargs) and self._record_owner(key)

    async def aacquire_lock(self, key: str, holder: str, *args: Any, **kwargs: Any) -> bool:
        return await super().aacquire_lock(key, holder, *args, **kwargs) and self._record_owner(key)

    def _record_owner(self, key: str) -> bool:
        """Add :func:`owner_record` to the lock file Prefect just wrote (atomically)."""
        path = Path(self._locks[key]["path"])
        record = {**_read_json(path), **owner_record()}
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)  # readers see Prefect's record or the full one, never a part
        return True

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        """Prefect's ``wait_for_lock`` polls this: a lock whose owner is gone is broken here."""
        info = self._get_lock_info(key, use_cache=use_cache)
        if info is None:
            return False
        path = Path(info["path"])
        with contextlib.suppress(FileNotFoundError):  # released since: unlocked
            reason = owner_gone(info, time.time() - path.stat().st_mtime)
            if reason is None or not self._break(path, info):
                return super().is_locked(key, use_cache=use_cache)
            line = f"[lock] {path.name}: {reason}; lock broken, its task runs again"
            print(line, file=sys.stderr, flush=True)
        self._locks.pop(key, None)
        return False

    @staticmethod
    def _break(path: Path, dead: dict[str, Any]) -> bool:
        """Remove ``path`` if it still is the lock judged dead (not one taken since)."""
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.broken")
        try:
            os.rename(path, aside)  # atomic: of two waiters, one moves it
        except FileNotFoundError:
            return True  # another waiter broke it first
        now = _read_json(aside)
        keys = ("holder", "host", "pid", "started")
        same = all((now.get(k) or None) == (dead.get(k) or None) for k in keys)
        if not same:  # re-taken between our read and the rename: put the live lock back
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
        aside.unlink(missing_ok=True)
        return same


def release_held_locks() -> list[Path]:
    """Remove the lock files this process holds (on Ctrl-C, before exiting); return them. The
    files are the truth: those whose owner record is this process."""
    me = owner_record()
    held = sorted(p for p in locks_dir().glob("*.lock") if _read_json(p).items() >= me.items())
    for path in held:
        path.unlink(missing_ok=True)
    return held


def cached_task(cache_key_fn: Callable[..., str | None], **options: Any) -> Any:
    """A task decorator: results persisted and cached under ``cache_key_fn``'s key, with
    SERIALIZABLE isolation (:class:`LocalLockManager`); ``options`` go to ``prefect.task``."""
    policy = CacheKeyFnPolicy(cache_key_fn=cache_key_fn).configure(
        isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=LocalLockManager()
    )
    return task(cache_policy=policy, persist_result=True, **options)


def cached_values(task: Any, keys: list[str]) -> dict[str, Any]:
    """``{key: cached value}`` for the keys that have a readable cache record of ``task``."""
    store = get_result_store().update_for_task(task)
    found = {}
    for key in filter(store.exists, keys):
        with contextlib.suppress(Exception):  # an unreadable record counts as no record
            found[key] = store.read(key).result
    return found


def run_fresh(
    task: Any, output: str, *args: Any, valid: Callable[[Any], bool] | None = None
) -> Any:
    """Run ``task(*args)`` (inside a flow); a cache record counts only while storage holds the URI
    its value has under ``output`` (and, given ``valid``, while ``valid(value)`` holds: what the
    URI holds is still what the record made), else the task runs again and overwrites it."""
    parameters = get_call_parameters(task.fn, args, {})  # as the task's own call binds them
    key = task.cache_policy.compute_key(None, parameters, {})
    stale = any(
        not storage.exists(v[output]) or (valid is not None and not valid(v))
        for v in cached_values(task, [key]).values()
    )
    return task.with_options(refresh_cache=stale)(*args)
