"""Cache isolation and storage checks shared by the cached tasks.

Two rules (README "Caching, failures and reruns"):

- **Storage is the truth.** A cache record only says where a task's outputs went. Before a
  cached task counts, the flow asks storage whether those outputs still exist (e.g.
  :func:`tasks.transfer.stale_shards`, over :func:`cached_values`); when
  they do not, the task is submitted with ``refresh_cache=True``: it recomputes (skipping what is
  still there) and overwrites the record.
- **One computation per key.** Cached tasks run under SERIALIZABLE isolation with a lock manager
  shared by every process of this machine (:class:`LocalLockManager`): of two identical runs started
  together, one computes each key while the other waits and then takes the cache hit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel

#: Environment variable naming the lock folder (default: ``$PREFECT_HOME/locks``).
LOCKS_ENV = "ZODI_LOCKS_DIR"


def locks_dir() -> Path:
    """Folder of the cache lock files, read when a flow runs (never at import)."""
    if os.environ.get(LOCKS_ENV):
        return Path(os.environ[LOCKS_ENV]).expanduser()
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser() / "locks"


def _holder_is_dead(holder: str) -> bool:
    """True when a lock holder (Prefect's ``host:pid:thread…``) is a dead process of this host."""
    import socket

    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's lock: it expires only with that machine's help
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LocalLockManager(FileSystemLockManager):
    """Lock files in :func:`locks_dir`, for the processes of one machine.

    The folder is read when a lock is taken (settings are read when a flow runs, never at
    import). A lock left by a process of this machine that died (a killed worker) is broken
    instead of blocking every later run. Across machines, configure the tasks' cache policy with
    a lock manager all of them reach (e.g. prefect-redis's ``RedisLockManager``); see README.
    """

    def __init__(self) -> None:
        self._locks = {}

    @property
    def lock_files_directory(self) -> Path:  # type: ignore[override]
        return locks_dir().resolve()

    @lock_files_directory.setter
    def lock_files_directory(self, value: Path) -> None:
        pass  # always locks_dir(): FileSystemLockManager.__init__ sets it

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        info = self._get_lock_info(key, use_cache=use_cache)
        if info is not None and _holder_is_dead(str(info.get("holder", ""))):
            Path(info["path"]).unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)


def isolated_policy(cache_key_fn: Callable[..., str | None]) -> Any:
    """The cache policy of ``cache_key_fn`` under SERIALIZABLE isolation (:class:`LocalLockManager`)."""
    return CacheKeyFnPolicy(cache_key_fn=cache_key_fn).configure(
        isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=LocalLockManager()
    )


def cached_values(task: Any, keys: list[str]) -> dict[str, Any]:
    """``{key: cached value}`` for the keys that have a cache record in ``task``'s result store."""
    from prefect.results import get_result_store

    store = get_result_store().update_for_task(task)
    found = {}
    for key in keys:
        if not store.exists(key):
            continue
        try:
            found[key] = store.read(key).result
        except Exception:  # noqa: BLE001 - an unreadable record counts as no record
            continue
    return found
