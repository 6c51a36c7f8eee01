"""Cache keys of the Prefect tasks (each beside its task): what must be equal for a stored
result to be reused."""

from __future__ import annotations

from test_sharding import _samples

from tasks.transfer import _shard_cache_key
from zodi_core import manifest, sharding
from zodi_core.config import TransferConfig


def test_transfer_cache_key_covers_config_models_destination_and_content(tmp_path):
    uri = manifest.write_manifest(_samples(4), str(tmp_path / "a.parquet"), "samples")
    shard = sharding.shard_manifest(uri, 4)[0]
    cfg = TransferConfig.preset("demo")

    def key(config=cfg, out_root="/out", s=shard):
        return _shard_cache_key(None, {"shard": s, "config": config, "out_root": out_root})

    assert key() == key()
    assert key() != key(cfg.replace(strength=0.5))
    assert key() != key(cfg.replace(prompt="driving at dusk"))
    assert key() != key(out_root="/elsewhere")
    assert key() != key(cfg.replace(models={**cfg.models.model_dump(), "revision": "other"}))
    other = manifest.write_manifest(_samples(5)[1:], str(tmp_path / "b.parquet"), "samples")
    assert key() != key(s=sharding.shard_manifest(other, 4)[0])
    # Outputs do not depend on the batch size, so neither does the key.
    assert key() == key(cfg.replace(batch_size=1))
