"""What a generated image depends on: transfer settings and the identity of the models.

The *generation digest* names a generated image's settings and models; it is part of the image's
storage key (:mod:`zodi_core.layout`), is written into the PNG, and is recorded on its manifest
row (``config_digest``), so a row, its key and its bytes always agree.
"""

from __future__ import annotations

from pathlib import Path

from zodi_core.config import ModelsConfig, TransferConfig, config_digest


def models_fingerprint(models: ModelsConfig) -> str:
    """Identity of the diffusion models: hub id@revision, or a local folder's content digest
    (so replacing the weights in a folder changes the fingerprint)."""
    from zodi_core.transfer.models import folder_digest

    parts = []
    for source, revision in (
        (models.base, models.revision),
        (models.controlnet, models.controlnet_revision),
    ):
        if source is None:
            continue
        path = Path(source).expanduser()
        parts.append(
            f"{source}@local:{folder_digest(path)}"
            if path.is_dir()
            else f"{source}@{revision or 'main'}"
        )
    return ",".join(parts)


def generation_digest(config: TransferConfig, fingerprint: str | None = None) -> str:
    """Digest of everything that determines a generated image: the batch-invariant transfer
    settings (:func:`~zodi_core.transfer.sampler.transfer_digest`) and the models' fingerprint.

    ``fingerprint``: :func:`models_fingerprint` of ``config.models`` when None.
    """
    from zodi_core.transfer.sampler import transfer_digest

    if fingerprint is None:
        fingerprint = models_fingerprint(config.models)
    return config_digest({"settings": transfer_digest(config), "models": fingerprint})
