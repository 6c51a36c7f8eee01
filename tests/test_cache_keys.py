"""zodi_core.cache_keys: what must be equal for a stored transfer result to be reused."""

from __future__ import annotations

from test_sharding import _samples

from zodi_core import cache_keys, manifest, sharding
from zodi_core.config import TransferConfig


def test_transfer_cache_key_covers_config_destination_and_content(tmp_path):
    uri = manifest.write_manifest(_samples(4), str(tmp_path / "a.parquet"), "samples")
    shard = sharding.shard_manifest(uri, 4)[0]
    cfg = TransferConfig.preset("demo")
    key = cache_keys.transfer_cache_key(shard, cfg, "/out")
    assert key == cache_keys.transfer_cache_key(shard, cfg, "/out")
    assert key != cache_keys.transfer_cache_key(shard, cfg.replace(strength=0.5), "/out")
    assert key != cache_keys.transfer_cache_key(
        shard, cfg.replace(prompt="driving at dusk"), "/out"
    )
    assert key != cache_keys.transfer_cache_key(shard, cfg, "/elsewhere")
    assert key != cache_keys.transfer_cache_key(shard, cfg, "/out", "base@other-revision")
    # Outputs do not depend on the batch size, so neither does the key.
    assert key == cache_keys.transfer_cache_key(shard, cfg.replace(batch_size=1), "/out")
