"""Diffusion components: the loader and the tiny random-weight pipeline.

The sampler receives its components from outside (diffusers' practice), so tests pass tiny ones
built by :func:`write_tiny_models` and loaded through the same :func:`load_components` path as
Stable Diffusion 1.5 + ``control_v11p_sd15_seg``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zodi_core.config import ModelsConfig
from zodi_core.model_source import (
    HubUnreachableError,
    ModelSource,
    folder_problem,
    is_network_error,
    model_sources,
    offline_remedy,
    resolve_hub,
    source_identity,
    weights_variant,
)

if TYPE_CHECKING:
    import torch


@dataclass
class Components:
    """The diffusion components of one transfer model, on one device and dtype."""

    unet: Any  # diffusers.UNet2DConditionModel (or a stand-in with the same call signature)
    controlnet: Any  # diffusers.ControlNetModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    scheduler: Any  # diffusers.DDIMScheduler
    #: component → "id@revision", recorded in every transfer manifest row.
    revisions: dict[str, str] = field(default_factory=dict)


# 1. Loading ----------------------------------------------------------------------------------


def load_components(
    models: ModelsConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> Components:
    """Build the components with diffusers' and transformers' ``from_pretrained``: a local folder
    checked first, a hub id at the commit it resolves to, in float16 its ``fp16`` variant.
    ``revisions``: each model's :func:`~zodi_core.model_source.source_identity`."""
    base, cn = model_sources(models)
    for source in (base, cn):
        if source.local and (problem := folder_problem(source.path, source.needs, source.field)):
            raise FileNotFoundError(problem)
    # the hub asked once, in seconds, before the libraries' ~30 s of retries per file
    resolved = {s.field: resolve_hub(s) for s in (base, cn) if not s.local}

    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    dtype = dtype or torch.float32

    def load(cls: Any, source: ModelSource, sub: str | None, **kwargs: Any) -> Any:
        hub = resolved.get(source.field)
        if source.local:
            where, kw = str(source.path), {"local_files_only": True, "subfolder": sub}
        else:
            where = source.source
            sub = "/".join(p for p in (source.subfolder, sub) if p) or None
            kw = {"revision": hub.commit, "local_files_only": hub.cached_only, "subfolder": sub}
        if variant := weights_variant(source, sub, hub, dtype == torch.float16):
            kw["variant"] = variant
        try:
            return cls.from_pretrained(where, **kw, **kwargs)
        except (OSError, ValueError) as err:
            if not source.local and is_network_error(err):
                raise HubUnreachableError(
                    f"{source.field}: loading hub id {where!r} failed: a network problem; "
                    f"{offline_remedy(where, source.field)}"
                ) from None
            raise FileNotFoundError(
                f"{source.field}: could not load {where!r} (subfolder {sub!r}) from a local "
                f"folder, the hub or its cache: {' '.join(str(err).split())[:300]}"
            ) from None

    unet = load(UNet2DConditionModel, base, "unet", dtype=dtype)
    vae = load(AutoencoderKL, base, "vae", dtype=dtype)
    text_encoder = load(CLIPTextModel, base, "text_encoder", dtype=dtype)
    tokenizer = load(CLIPTokenizer, base, "tokenizer")
    scheduler = configure_scheduler(load(DDIMScheduler, base, "scheduler").config)
    controlnet = load(ControlNetModel, cn, None, dtype=dtype)

    # (attention: diffusers' default, PyTorch SDPA, whose kernel the speed levers choose)
    for module in (unet, controlnet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)

    revisions = {"base": source_identity(base), "controlnet": source_identity(cn)}
    return Components(unet, controlnet, vae, text_encoder, tokenizer, scheduler, revisions)


#: Settings of the noise schedule SD 1.5 was trained on: another value is another model family.
SD15_TRAINING = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}
#: Sampling settings SD 1.5 needs (DDIM's defaults clip x0 and end on alpha 1): set at load.
SAMPLING_SETTINGS = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
                     "thresholding": False, "rescale_betas_zero_snr": False}  # fmt: skip
#: Stable Diffusion 1.5's DDIM scheduler configuration.
SD15_SCHEDULER = {**SD15_TRAINING, **SAMPLING_SETTINGS, "timestep_spacing": "leading"}


def configure_scheduler(config: dict[str, Any], what: str = "models.base scheduler") -> Any:
    """SD 1.5's DDIM scheduler from a model's ``scheduler_config.json`` (any scheduler class):
    the noise schedule must be SD 1.5's (:data:`SD15_TRAINING`; else a one-line ValueError),
    the sampling settings are set to SD 1.5's (:data:`SAMPLING_SETTINGS`; one warning line)."""
    from diffusers import DDIMScheduler

    cfg = DDIMScheduler.from_config(config).config
    wrong = [f"{k} {cfg[k]!r} (SD 1.5: {v!r})" for k, v in SD15_TRAINING.items() if cfg[k] != v]
    if wrong:
        raise ValueError(
            f"{what}: {', '.join(wrong)}: the transfer needs Stable Diffusion 1.5's noise "
            "schedule; use an SD 1.5 model (or fix scheduler/scheduler_config.json)"
        )
    changed = {k: v for k, v in SAMPLING_SETTINGS.items() if cfg.get(k) != v}
    if changed:
        warnings.warn(
            f"{what}: "
            + ", ".join(f"{k} {cfg.get(k)!r} → {v!r}" for k, v in changed.items())
            + " (SD 1.5's DDIM sampling settings; the folder's scheduler_config.json differs)",
            stacklevel=3,
        )
    return DDIMScheduler.from_config({**cfg, **changed})


# 2. Tiny models ------------------------------------------------------------------------------


def build_tiny_components(seed: int = 0) -> Components:
    """Random-weight components with SD 1.5's architecture, shrunk: the VAE downsamples by 8 as
    SD 1.5's (the ControlNet's conditioning encoder matches the latent size); the ControlNet is
    active, so the condition changes the image."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    )
    controlnet = ControlNetModel.from_unet(unet)
    # from_unet's zero output convolutions would leave a tiny ControlNet inert (a condition ignored
    # or mis-fed unnoticed); its conditioning encoder re-drawn He-normal (the default all but
    # erases the image)
    g = torch.Generator("cpu").manual_seed(10_007 + seed)
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.05)
        for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        norm_num_groups=8,
        sample_size=64,
    )
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_text_config(tokenizer)))
    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    for m in (unet, controlnet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return Components(unet, controlnet, vae, text_encoder, tokenizer, scheduler, {"base": "tiny"})


def write_tiny_models(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline in diffusers' folder format (``model_index.json``, one subfolder per
    component, ``controlnet/``), loadable by :func:`load_components` like real weights."""
    out = Path(out_dir)
    c = build_tiny_components(seed)
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet"):
        getattr(c, name).save_pretrained(out / name)
    write_model_index(out)
    return out


def write_model_index(out: Path) -> None:
    """``model_index.json`` of an SD 1.5 + ControlNet folder (what ``from_pretrained`` reads)."""
    import diffusers

    index = {
        "_class_name": "StableDiffusionControlNetPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "controlnet": ["diffusers", "ControlNetModel"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))


def tiny_tokenizer() -> Any:
    """A small CLIPTokenizer built offline (the tiny models' and the tiny CLIP's): a byte-level
    BPE vocabulary (every byte, word-final and not) and a few merges; only valid ids matter."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    merges = [("d", "r"), ("i", "v"), ("dr", "iv"), ("n", "i"), ("g", "h")]
    tokens = [*chars, *(c + "</w>" for c in chars), *map("".join, merges), "<|startoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*tokens, "<|endoftext|>"]))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def clip_text_config(tokenizer: Any, hidden_size: int = 32, intermediate_size: int = 37) -> dict:
    """A small CLIP text encoder's settings for ``tokenizer`` (2 layers, 4 heads, 77 positions,
    its own start/end ids, padded with the end id): ``CLIPTextConfig(**...)``, or a CLIPConfig's
    ``text_config``. The tiny models', the tiny CLIP's and the pocket model's text encoders."""
    vocab = tokenizer.get_vocab()
    return dict(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
