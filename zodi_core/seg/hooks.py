"""Hooks of ZoDi training, registered in MMSeg's ``HOOKS``.

:class:`ZoDiSyncWorkDirHook` mirrors a local staging work dir to the real one (S3 through
:mod:`zodi_core.storage`) after every checkpoint, so a crash loses at most the work since the
last checkpoint wherever the work dir lives.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from zodi_core import storage

FileState = tuple[int, int]  # (size, mtime_ns)


def scan_work_dir(root: str | os.PathLike) -> dict[str, FileState]:
    """Relative POSIX path → (size, mtime) of every file under ``root``."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def plan_sync(
    local: dict[str, FileState], uploaded: dict[str, FileState]
) -> tuple[list[str], list[str]]:
    """(keys to upload: new or changed, keys to delete remotely: uploaded, gone locally).

    ``last_checkpoint`` is uploaded last: a reader who sees it finds the checkpoint it names.
    """
    upload = sorted(k for k, v in local.items() if uploaded.get(k) != v)
    upload.sort(key=lambda k: k == "last_checkpoint")
    delete = sorted(k for k in uploaded if k not in local)
    return upload, delete


@HOOKS.register_module()
class ZoDiSyncWorkDirHook(Hook):
    """Upload new checkpoints and logs of ``runner.work_dir`` to ``target`` after each save.

    Runs after the ``CheckpointHook`` (lower priority), when ``last_checkpoint`` changed, and
    once at the end of training. Checkpoints that mmengine rotated out locally
    (``max_keep_ckpts``) are deleted remotely too.
    """

    priority = "LOWEST"

    def __init__(self, target: str, storage_options: dict | None = None) -> None:
        self.target = target
        self.storage_options = storage_options or {}
        self._uploaded: dict[str, FileState] = {}
        self._last_marker: FileState | None = None

    def sync(self, work_dir: str | os.PathLike) -> list[str]:
        """Mirror ``work_dir`` to the target; return the keys uploaded."""
        store = storage.open_storage(self.target, **self.storage_options)
        local = scan_work_dir(work_dir)
        upload, delete = plan_sync(local, self._uploaded)
        for key in upload:
            store.put_file(key, Path(work_dir) / key)
            self._uploaded[key] = local[key]
        for key in delete:
            store.delete(key)
            self._uploaded.pop(key, None)
        return upload

    def _sync_if_saved(self, runner) -> None:
        marker = Path(runner.work_dir) / "last_checkpoint"
        if not marker.is_file():
            return
        st = marker.stat()
        state = (st.st_size, st.st_mtime_ns)
        if state != self._last_marker:
            self._last_marker = state
            self.sync(runner.work_dir)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._sync_if_saved(runner)

    def after_train_epoch(self, runner) -> None:
        self._sync_if_saved(runner)

    def after_train(self, runner) -> None:
        self.sync(runner.work_dir)
