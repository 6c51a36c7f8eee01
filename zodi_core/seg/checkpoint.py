"""Loading mmengine checkpoints under torch ≥ 2.6, whose ``torch.load`` defaults to
``weights_only=True``.

mmengine 0.10 calls ``torch.load(filename, map_location)`` without ``weights_only``; a
checkpoint written by its Runner pickles the message hub (``mmengine.logging.HistoryBuffer``,
numpy arrays and scalars), so the safe unpickler refuses it ("Unsupported global:
mmengine.logging.history_buffer.HistoryBuffer"). Instead of switching the safe loader off for
the whole process (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), :func:`checkpoint_loading` allows
exactly the classes an mmengine checkpoint holds, for the duration of a ``with`` block.

One more global appears in those pickles: ``builtins.getattr``, because a ``HistoryBuffer``
pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``. Allowing the real getattr
would let a malicious file walk to any function (and defeat the safe loader), so the name is
bound to :func:`_history_buffer_getattr`, which resolves only those attributes.

Writing: :class:`AtomicLocalBackend` (mmengine file backend ``zodi_atomic_local``, set on the
``CheckpointHook`` by :func:`~zodi_core.seg.train.train_model`) publishes each checkpoint with a
temp file beside it, fsync and ``os.replace``: a crash or a full disk never leaves a truncated
``iter_N.pth`` for the next run to resume from. :func:`latest_checkpoint` finds what to resume.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.runner import find_latest_checkpoint

from zodi_core import storage
from zodi_core.storage.local import write_atomic

#: mmengine file backend name of :class:`AtomicLocalBackend` (``backend_args=dict(backend=...)``).
ATOMIC_BACKEND = "zodi_atomic_local"
_CHECKPOINT_NAME = re.compile(r"(iter|epoch)_(\d+)\.pth")


def _numpy_globals() -> list[Any]:
    """numpy's reconstruction helpers and dtype classes (arrays and scalars in the log history)."""
    found: list[Any] = [np.ndarray, np.dtype]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["_reconstruct", "scalar"])
        except ImportError:
            continue
        found += [module._reconstruct, module.scalar]
        break
    # One class per dtype (numpy >= 1.25: numpy.dtypes.Float64DType, ...).
    found += [type(np.dtype(t)) for t in np.sctypeDict.values() if isinstance(t, type)]
    return list(dict.fromkeys(found))


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to HistoryBuffer's statistics methods (see module doc)."""
    from mmengine.logging import HistoryBuffer

    allowed = {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"checkpoint: refused getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}); "
        f"only HistoryBuffer statistics methods are allowed"
    )


def safe_globals() -> list[Any]:
    """The globals an mmengine Runner checkpoint pickles besides tensors and containers."""
    import codecs

    from mmengine.config import ConfigDict
    from mmengine.logging import HistoryBuffer, MessageHub

    return [
        HistoryBuffer,
        MessageHub,
        ConfigDict,
        codecs.encode,  # bytes of numpy scalars (pickle protocol 2)
        (_history_buffer_getattr, "builtins.getattr"),
        *_numpy_globals(),
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
    """mmengine's local backend whose ``put`` publishes atomically (temp file, fsync, rename).

    A failed write (no space left, a kill) leaves the previous file or nothing, never a part;
    the error names the file (``<path>: write failed: no space left on the device ...``).
    """

    def put(self, obj: bytes, filepath: str | Path) -> None:
        write_atomic(Path(filepath), lambda f: f.write(obj))


def checkpoint_step(path: str | Path) -> tuple[str, int] | None:
    """``("iter", 140)`` for ``.../iter_140.pth`` (``"epoch"`` for epoch checkpoints), else None."""
    match = _CHECKPOINT_NAME.fullmatch(Path(path).name)
    return (match.group(1), int(match.group(2))) if match else None


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint to resume ``work_dir`` from, or None.

    The file mmengine's :func:`~mmengine.runner.find_latest_checkpoint` names (the
    ``last_checkpoint`` marker), looked up by name in ``work_dir`` (a moved or staged work dir
    keeps its checkpoints); None without a marker or when the file it names was deleted. A
    marker left empty (a full disk while mmengine rewrote it) falls back to the highest
    ``iter_N.pth`` / ``epoch_N.pth`` of the folder.
    """
    work_dir = Path(work_dir)
    if not (work_dir / "last_checkpoint").is_file():
        return None
    named = (find_latest_checkpoint(str(work_dir)) or "").strip()
    if named:
        path = work_dir / Path(named.replace("\\", "/")).name
        return path if path.is_file() else None
    found = [(step, p) for p in work_dir.glob("*.pth") if (step := checkpoint_step(p))]
    return max(found, key=lambda x: x[0][1])[1] if found else None
