"""The one owner of what a generated image depends on: the *generation digest* of its transfer
settings and models (:func:`~zodi_core.model_source.models_fingerprint`), part of its storage key
(:mod:`zodi_core.layout`), written into its PNG and recorded on its manifest row.
"""

from __future__ import annotations

from zodi_core.config import TRANSFER_SPEED_LEVERS, TransferConfig, config_digest
from zodi_core.model_source import models_fingerprint


def transfer_digest(config: TransferConfig) -> str:
    """Digest of the settings that determine a generated image: the resolved TransferConfig (a
    domain's own settings folded in, the others' left out) without its speed levers
    (:data:`~zodi_core.config.TRANSFER_SPEED_LEVERS`); ``prompts`` only when set."""
    data = config.resolved().model_dump(
        mode="json", exclude={"domain_settings", "seed_offset", *TRANSFER_SPEED_LEVERS}
    )
    if not data["prompts"]:
        del data["prompts"]
    return config_digest(data)


def generation_digest(config: TransferConfig, fingerprint: str | None = None) -> str:
    """Digest of everything that determines a generated image: the batch-invariant transfer
    settings (:func:`transfer_digest`) and the models' ``fingerprint`` (computed when None)."""
    fingerprint = fingerprint or models_fingerprint(config.models)
    return config_digest({"settings": transfer_digest(config), "models": fingerprint})
