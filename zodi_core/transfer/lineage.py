"""What a generated image depends on: transfer settings and the identity of the models.

The *generation digest* names a generated image's settings and models; it is part of the image's
storage key (:mod:`zodi_core.layout`), is written into the PNG, and is recorded on its manifest
row (``config_digest``), so a row, its key and its bytes always agree. The models' part is
:func:`~zodi_core.model_source.models_fingerprint`: a local folder's content digest (the bytes of
its weights) or a hub id's commit.
"""

from __future__ import annotations

from zodi_core.config import TRANSFER_SPEED_LEVERS, TransferConfig, config_digest
from zodi_core.model_source import models_fingerprint

__all__ = ["generation_digest", "models_fingerprint", "transfer_digest"]


def transfer_digest(config: TransferConfig) -> str:
    """Digest of the settings that determine a generated image: the TransferConfig without its
    speed levers (:data:`~zodi_core.config.TRANSFER_SPEED_LEVERS`: batch size, compile,
    channels_last, attention backend, cuDNN autotuning, TF32 change speed, not pixels beyond float
    rounding, so a rerun with other levers may skip).

    Digested resolved (a domain's own settings folded in, other domains' left out); ``prompts``
    only when set."""
    data = config.resolved().model_dump(
        mode="json", exclude={"domain_settings", "seed_offset", *TRANSFER_SPEED_LEVERS}
    )
    if not data["prompts"]:
        del data["prompts"]
    return config_digest(data)


def generation_digest(config: TransferConfig, fingerprint: str | None = None) -> str:
    """Digest of everything that determines a generated image: the batch-invariant transfer
    settings (:func:`transfer_digest`) and the models' fingerprint.

    ``fingerprint``: :func:`~zodi_core.model_source.models_fingerprint` of ``config.models``
    when None (a caller that digests many shards passes it once).
    """
    if fingerprint is None:
        fingerprint = models_fingerprint(config.models)
    return config_digest({"settings": transfer_digest(config), "models": fingerprint})
