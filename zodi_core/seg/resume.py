"""Whether a training run resumes its work dir, and from which checkpoint: a work dir records
the settings its checkpoints were trained with (:data:`SETTINGS_RECORD`), and only the same
settings resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from zodi_core import storage
from zodi_core.config import ConfigError
from zodi_core.seg.checkpoint import checkpoint_step
from zodi_core.storage.local import write_atomic

#: File in a work dir recording the settings its checkpoints were trained with.
SETTINGS_RECORD = "zodi-train-settings.json"
#: The parts of an mmengine config that decide the trained model (logging, hooks, validation
#: and the work dir do not).
SETTINGS_KEYS = ("model", "train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler")


def say(line: str) -> None:
    """One line for people on stderr (rank 0 of a DDP run only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(line, file=sys.stderr, flush=True)


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key in sorted(node, key=str):
            _flatten(node[key], f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            _flatten(item, f"{prefix}.{i}", out)
    else:
        out[prefix] = node if isinstance(node, str | int | float | bool | None) else repr(node)


def training_settings(cfg, seed: int) -> dict[str, Any]:
    """``{dotted key: value}`` of what decides the trained model: :data:`SETTINGS_KEYS` of the
    final config, the seed, and the SHA-256 of every manifest the training set reads (the same
    URI with new content is new data)."""
    out: dict[str, Any] = {"seed": seed}
    for key in SETTINGS_KEYS:
        _flatten(cfg.get(key), key, out)
    dataset = cfg.train_dataloader.dataset
    for key in ("manifest", "source_manifest"):
        if uri := dataset.get(key):
            out[f"data.{key}.sha256"] = hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    return out


def read_settings_record(work_dir: Path) -> dict[str, Any] | None:
    """The settings recorded in ``work_dir`` (None: no record, or an unreadable one)."""
    try:
        return json.loads((work_dir / SETTINGS_RECORD).read_text())["settings"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_settings_record(work_dir: Path, settings: dict[str, Any]) -> None:
    body = json.dumps({"settings": settings}, indent=1, sort_keys=True).encode()
    write_atomic(work_dir / SETTINGS_RECORD, lambda f: f.write(body))


def changed_settings(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """``train_cfg.max_iters 40 → 50; ...``: the first ``limit`` settings that differ."""
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = [f"{k} {old.get(k, '(none)')} → {new.get(k, '(none)')}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(shown) + more


def decide_resume(
    resume: bool | str,
    last: Path | None,
    recorded: dict[str, Any] | None,
    settings: dict[str, Any],
    work_dir: str,
) -> bool:
    """Whether to resume from ``last``. ``"auto"`` resumes the same settings, starts without a
    checkpoint, and otherwise refuses naming what changed: a checkpoint of other settings is
    never resumed silently (``True`` resumes it, saying so on stderr)."""
    if resume is True:
        if last is None:
            raise FileNotFoundError(
                f"--resume: no checkpoint to resume in the work dir {work_dir} (no "
                f"last_checkpoint or iter_N.pth); drop --resume to start training"
            )
        if recorded is not None and recorded != settings:
            say(f"zodi train: --resume with other settings than the checkpoint's: "
                f"{changed_settings(recorded, settings)}")  # fmt: skip
        return True
    if resume is False or last is None:
        return False
    if recorded is None:
        raise ConfigError(
            f"work dir {work_dir}: holds {last.name} but no record of the settings it was "
            f"trained with ({SETTINGS_RECORD}); pass --resume to continue it, --no-resume to "
            f"start over, or another --work-dir"
        )
    if recorded != settings:
        raise ConfigError(
            f"work dir {work_dir}: holds {last.name} trained with other settings "
            f"({changed_settings(recorded, settings)}); train into another --work-dir, or pass "
            f"--resume to continue it with these settings (--no-resume: start over)"
        )
    return True


def schedule_done(checkpoint: Path, train_cfg) -> bool:
    """Whether ``checkpoint`` (``iter_N.pth`` / ``epoch_N.pth``) already ends ``train_cfg``."""
    kind, n = checkpoint_step(checkpoint) or ("", 0)
    if train_cfg.get("type") == "IterBasedTrainLoop":
        return kind == "iter" and n >= train_cfg.max_iters
    return kind == "epoch" and n >= train_cfg.get("max_epochs", math.inf)


def stage_resume(work_dir: str, staging: Path, storage_options: dict) -> str | None:
    """Download the last checkpoint of a remote work dir (and its settings record) into
    ``staging``; return its path (None: nothing to resume)."""
    store = storage.open_storage(work_dir, **storage_options)
    if store.exists(SETTINGS_RECORD):
        store.get_file(SETTINGS_RECORD, staging / SETTINGS_RECORD)
    if not store.exists("last_checkpoint"):
        return None
    name = store.get_bytes("last_checkpoint").decode().strip().replace("\\", "/").rsplit("/", 1)[-1]
    if not store.exists(name):  # the checkpoint was deleted: nothing to resume from
        return None
    local = store.get_file(name, staging / name)
    (staging / "last_checkpoint").write_text(str(local))
    return str(local)
