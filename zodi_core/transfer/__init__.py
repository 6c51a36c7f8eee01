"""Zero-shot image transfer (SPEC §2): ``models`` (loader), ``sampler``, ``lineage`` (digests),
``runner`` (manifest in, images and manifest out), ``preview`` and ``tune`` (strength).

Names are imported on first use (PEP 562): the sampler alone (the GPU check, bench) does not
import the runner's Parquet and storage stack.
"""

import importlib

#: public name → the submodule that defines it (the lazy table is the one list of names).
_HOMES = {
    **dict.fromkeys(("generation_digest", "models_fingerprint", "transfer_digest"), "lineage"),
    **dict.fromkeys(("Components", "load_components", "write_tiny_models"), "models"),
    **dict.fromkeys(("TransferResult", "transfer_manifest"), "runner"),
    **dict.fromkeys(
        ("TransferOutput", "TransferSampler", "generation_size", "plan_timesteps", "sample_seed"),
        "sampler",
    ),
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
