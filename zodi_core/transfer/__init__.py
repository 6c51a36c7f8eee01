"""Zero-shot image transfer (SPEC §2): the sampler, its model loader, manifest runner and preview.

- :mod:`.models`: :func:`load_components`, the tiny random-weight pipeline (the device and dtype
  are :func:`zodi_core.device.resolve_device`'s).
- :mod:`.sampler`: :class:`TransferSampler`, ControlNet + stochastic inversion, batched.
- :mod:`.lineage`: :func:`transfer_digest` (settings), :func:`generation_digest` (settings + model
  fingerprint), the images' key.
- :mod:`.runner`: :func:`transfer_manifest`, samples manifest → images + transfer manifest.
- :mod:`.preview`: one image at several strengths, as a contact sheet.

Torch, diffusers and transformers are imported inside functions, so importing this package is cheap.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zodi_core.transfer.lineage import generation_digest, models_fingerprint, transfer_digest
    from zodi_core.transfer.models import Components, load_components, write_tiny_models
    from zodi_core.transfer.runner import TransferResult, transfer_manifest
    from zodi_core.transfer.sampler import (
        TransferOutput,
        TransferSampler,
        generation_size,
        plan_timesteps,
        sample_seed,
    )

#: public name → the submodule that defines it. Imported on first use (PEP 562), so that
#: ``zodi_core.transfer.sampler`` alone (the GPU check, bench/transfer.py) does not import the
#: runner's Parquet and storage stack.
_HOMES = {
    "generation_digest": "lineage",
    "models_fingerprint": "lineage",
    "transfer_digest": "lineage",
    "Components": "models",
    "load_components": "models",
    "write_tiny_models": "models",
    "TransferResult": "runner",
    "transfer_manifest": "runner",
    "TransferOutput": "sampler",
    "TransferSampler": "sampler",
    "generation_size": "sampler",
    "plan_timesteps": "sampler",
    "sample_seed": "sampler",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Components",
    "TransferOutput",
    "TransferResult",
    "TransferSampler",
    "generation_digest",
    "generation_size",
    "load_components",
    "models_fingerprint",
    "plan_timesteps",
    "sample_seed",
    "transfer_digest",
    "transfer_manifest",
    "write_tiny_models",
]
