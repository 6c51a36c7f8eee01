"""Cache keys of the Prefect tasks: what must be equal for a stored result to be reused."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from zodi_core import __version__
from zodi_core.config import TransferConfig
from zodi_core.sharding import ShardRef


@functools.cache
def code_version() -> str:
    """Version of the code that generates images: package version + source of the transfer code
    (read once per process)."""
    root = Path(__file__).parent
    files = [root / "conditions.py", *sorted((root / "transfer").glob("*.py"))]
    h = hashlib.sha256(__version__.encode())
    for f in files:
        if f.exists():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def transfer_cache_key(
    shard: ShardRef, config: TransferConfig, out_root: str, model_revisions: str = ""
) -> str:
    """Cache key of one transfer shard: shard content, transfer config, model revisions, code,
    and the destination (a cached result points at images under ``out_root``).

    Not the run id: the same shard with the same settings is reused across runs.
    """
    from zodi_core.transfer.sampler import transfer_digest

    parts = [shard.digest, transfer_digest(config), model_revisions, code_version(), out_root]
    return "transfer-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]
