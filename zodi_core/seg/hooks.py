"""Hooks of ZoDi training, registered in MMSeg's ``HOOKS``: mirroring a staging work dir to S3
after every checkpoint, and a one-line progress display."""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from zodi_core import storage

FileState = tuple[int, int]  # (size, mtime_ns)


def scan_work_dir(root: str | os.PathLike) -> dict[str, FileState]:
    """Relative POSIX path → (size, mtime) of every file under ``root``."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): _state(p) for p in root.rglob("*") if p.is_file()}


def _state(path: Path) -> FileState:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


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
    """Upload new checkpoints and logs of ``runner.work_dir`` to ``target`` after each save (and
    at the end); checkpoints rotated out locally (``max_keep_ckpts``) are deleted remotely."""

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

    def after_train_epoch(self, runner, *_: object, **__: object) -> None:
        """After each epoch or iteration: mirror when a checkpoint was saved (its marker changed)."""
        marker = Path(runner.work_dir) / "last_checkpoint"
        if marker.is_file() and (state := _state(marker)) != self._last_marker:
            self._last_marker = state
            self.sync(runner.work_dir)

    after_train_iter = after_train_epoch

    def after_train(self, runner) -> None:
        self.sync(runner.work_dir)


#: Loss terms shown on the progress line, in this order when present (others containing "loss"
#: follow): ZoDi's (SPEC §3) and a plain segmentor's.
PROGRESS_TERMS = ("loss", "loss_sim", "ce_src", "ce_gen", "decode.loss_ce", "aux.loss_ce")


def format_losses(terms: dict[str, float]) -> str:
    """``loss 1.234  loss_sim 0.012  ce_src 0.6  ce_gen 0.6``: the loss terms worth a glance."""
    keys = [k for k in PROGRESS_TERMS if k in terms]
    if "ce_src" not in terms:
        keys += sorted(k for k in terms if "loss" in k and k not in keys)
    return "  ".join(f"{k} {terms[k]:.4g}" for k in keys)


def format_progress(
    iteration: int, total: int, terms: dict[str, float], eta_s: float | None
) -> str:
    """``iter 12/40  loss 1.234  loss_sim 0.012 ...  ETA 0:00:31`` (one line, no newline)."""
    eta = f"ETA {datetime.timedelta(seconds=round(eta_s))}" if eta_s is not None else ""
    return "  ".join(p for p in (f"iter {iteration}/{total}", format_losses(terms), eta) if p)


@HOOKS.register_module()
class ZoDiProgressHook(Hook):
    """One compact progress line per ``interval`` iterations on stderr, rewritten in place on a
    terminal."""

    priority = "BELOW_NORMAL"

    def __init__(self, interval: int = 1) -> None:
        self.interval = max(1, int(interval))

    def before_train(self, runner) -> None:
        self._start, self._start_iter = time.monotonic(), runner.iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.rank != 0:  # one line for a DDP run, not one per process
            return
        iteration, total = runner.iter + 1, runner.max_iters
        if iteration % self.interval and iteration != total:
            return
        done = iteration - self._start_iter
        eta = (time.monotonic() - self._start) / done * (total - iteration) if done > 0 else None
        terms = {k: float(v) for k, v in (outputs or {}).items()}  # log_vars: scalar tensors
        line = format_progress(iteration, total, terms, eta)
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K" + line + ("\n" if iteration == total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
