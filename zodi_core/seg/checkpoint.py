"""mmengine checkpoints: loading under torch ≥ 2.6, atomic writing, the one to resume.

torch ≥ 2.6 loads ``weights_only=True`` and refuses the message hub an mmengine checkpoint
pickles ("Unsupported global: ...HistoryBuffer"); rather than switch the safe loader off for the
process, :func:`checkpoint_loading` allows exactly those classes within a ``with`` block.
:class:`AtomicLocalBackend` never leaves a truncated ``iter_N.pth`` for a resume to pick.
"""

from __future__ import annotations

import codecs
import io
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import ConfigDict
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import find_latest_checkpoint
from numpy._core.multiarray import _reconstruct, scalar

from zodi_core import storage
from zodi_core.storage.local import write_atomic

#: mmengine file backend name of :class:`AtomicLocalBackend` (``backend_args=dict(backend=...)``).
ATOMIC_BACKEND = "zodi_atomic_local"
_CHECKPOINT_NAME = re.compile(r"(iter|epoch)_(\d+)\.pth")


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to HistoryBuffer's statistics methods, which it pickles as
    ``getattr(HistoryBuffer, 'mean')``: the real getattr would let a file reach any function."""
    allowed = {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"checkpoint: refused getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}); "
        f"only HistoryBuffer statistics methods are allowed"
    )


def safe_globals() -> list[Any]:
    """The globals an mmengine Runner checkpoint pickles besides tensors and containers (numpy
    arrays, scalars and one dtype class per dtype in the log history among them)."""
    dtypes = [type(np.dtype(t)) for t in np.sctypeDict.values() if isinstance(t, type)]
    return [
        HistoryBuffer,
        MessageHub,
        ConfigDict,
        codecs.encode,  # bytes of numpy scalars (pickle protocol 2)
        (_history_buffer_getattr, "builtins.getattr"),
        *dict.fromkeys([np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]),
    ]


@contextmanager
def checkpoint_loading() -> Iterator[None]:
    """Within the block, ``torch.load`` (weights only) accepts mmengine checkpoints."""
    with torch.serialization.safe_globals(safe_globals()):
        yield


def load_checkpoint_file(uri: str, map_location: str = "cpu") -> dict[str, Any]:
    """``torch.load`` of an mmengine checkpoint (a path or ``s3://`` URI), weights-only with the
    allowed classes above."""
    try:
        data = io.BytesIO(storage.read_bytes(uri))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {uri} not found") from None
    with checkpoint_loading():
        return torch.load(data, map_location=map_location, weights_only=True)


@register_backend(ATOMIC_BACKEND, force=True)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend whose ``put`` publishes atomically (temp file, fsync, rename)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        write_atomic(Path(filepath), lambda f: f.write(obj))


def checkpoint_step(path: str | Path) -> tuple[str, int] | None:
    """``("iter", 140)`` for ``.../iter_140.pth`` (``"epoch"`` for epoch checkpoints), else None."""
    match = _CHECKPOINT_NAME.fullmatch(Path(path).name)
    return (match.group(1), int(match.group(2))) if match else None


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint to resume ``work_dir`` from (mmengine's ``find_latest_checkpoint``, by
    file name: a moved or staged work dir keeps its checkpoints), or None. A marker left empty
    (a full disk while mmengine rewrote it) falls back to the highest ``iter_N``/``epoch_N``."""
    work_dir = Path(work_dir)
    if not (work_dir / "last_checkpoint").is_file():
        return None
    if named := find_latest_checkpoint(str(work_dir)):  # stripped; "" for an empty marker
        path = work_dir / Path(named.replace("\\", "/")).name
        return path if path.is_file() else None
    found = [(step, p) for p in work_dir.glob("*.pth") if (step := checkpoint_step(p))]
    return max(found, key=lambda x: x[0][1])[1] if found else None
