"""Train the pocket models: SD 1.5's component classes, shrunk, trained on the web corpus.

Three phases, each SD's / ControlNet's recipe at a small scale:

1. ``vae``: ``AutoencoderKL``, L1 + MSE plus KL (1e-6, SD's value); SD's LPIPS and GAN terms are
   left out (no pretrained perceptual network offline). The latent scaling factor is set to
   1 / std of the training latents, as SD's 0.18215 was chosen.
2. ``unet``: ε-prediction on SD 1.5's scaled-linear schedule, Min-SNR weighting, 10% empty
   captions (for CFG), ``EMAModel``. No pretrained CLIP exists here, so the text encoder is
   trained jointly with the UNet (as LDM's own text-to-image model did).
3. ``controlnet``: ``ControlNetModel.from_unet`` of the EMA UNet on ``render_condition`` maps,
   base frozen, 50% empty captions (ControlNet's recipe).

Every step draws batch, flips, timesteps and noise from a generator seeded by (seed, phase, step),
so a resumed run takes the same steps as an uninterrupted one; a finished phase (recorded in
``training_state.json``) is skipped on a rerun.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from zodi_core.conditions import render_condition
from zodi_core.device import resolve_device
from zodi_core.pocket.corpus import Corpus, write_tokenizer
from zodi_core.transfer.models import SD15_SCHEDULER, clip_text_config, write_model_index

PHASES = ("vae", "unet", "controlnet")


@dataclass(frozen=True)
class PocketSpec:
    """Sizes and training lengths of the pocket models."""

    seed: int = 0
    width: int = 128
    height: int = 64
    n_per_domain: int = 200
    n_heldout: int = 24
    batch_size: int = 16
    vae_steps: int = 1000
    vae_lr: float = 1e-3
    #: One down block per entry; the VAE's factor is 2 ** (len - 1) (read back by the sampler).
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)
    #: GroupNorm groups of the VAE: at least 4 channels a group (see ``unet_norm_groups``).
    vae_norm_groups: int = 4
    #: VAE training crops (height, width); the VAE is convolutional and used at full size (SD's
    #: VAE was trained on 256² crops and is used at 512²).
    vae_crop: tuple[int, int] = (32, 64)
    kl_weight: float = 1e-6
    unet_steps: int = 3000
    unet_lr: float = 5e-4
    unet_channels: tuple[int, ...] = (32, 64)
    #: Down block types (up blocks mirror them).
    unet_blocks: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    #: GroupNorm groups of the UNet (and ControlNet). SD's 32 groups on 32 channels would be one
    #: channel a group, whose spatial mean the norm removes, so ε's per-image mean (std ≈ 0.09 on
    #: 8x16) is lost; CFG and 1/α at high noise make that wrong global colours. SD: 10 a group.
    unet_norm_groups: int = 8
    text_width: int = 64
    caption_dropout: float = 0.1
    #: ε-MSE weighted (min(SNR, γ) + 1)/SNR (Min-SNR-γ v-loss, Hang et al. 2023; ε-prediction kept
    #: as SD 1.5) so high-noise steps are not drowned (docs/fidelity.md §1).
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    #: Offset noise (diffusers' ``--noise_offset``, Guttenberg 2023): ε plus this times one normal
    #: draw per image and latent channel. Without it a latent's per-channel mean leaks through
    #: SD's schedule even at t = 999 (signal 0.068 against the mean of 512 noise values, std
    #: 0.044), the model learns to take the image's brightness from the noise, and from pure
    #: noise a dark look (night) comes out half-lit at CFG 3 (docs/fidelity.md §1).
    noise_offset: float = 0.0
    #: Keep an ``EMAModel`` of the ControlNet too (decay ``ema_decay``), as of the UNet.
    controlnet_ema: bool = False
    #: ControlNet conditioning encoder: len - 1 stride-2 convolutions, matching the VAE's factor
    #: (SD 1.5: (16, 32, 96, 256) for factor 8).
    controlnet_cond_channels: tuple[int, ...] = (16, 32, 64, 128)
    #: Palette of the ControlNet's condition maps (SPEC §2): ``ade20k`` (SD's ControlNet seg was
    #: trained on it; train drawn as bus, rider as person) or ``cityscapes`` (every class its own).
    controlnet_palette: str = "ade20k"
    controlnet_steps: int = 1000
    controlnet_lr: float = 5e-4
    #: Learning-rate schedule of the ControlNet phase, by diffusers' ``get_scheduler`` (its
    #: ``train_controlnet.py --lr_scheduler``): ``constant`` (SD's and ControlNet's) or ``cosine``
    #: (to 0 at the last step).
    controlnet_lr_schedule: str = "constant"
    #: Share of the ControlNet's training captions replaced by the empty one (ControlNet's 0.5,
    #: so it reads the map's semantics alone). Under the empty caption the look is unknown, and
    #: the ControlNet hedges across the six (0.1 lifts the layout 33.3 -> 37.8: docs/fidelity.md
    #: §1, v11 trial); but a ControlNet that leans on its caption loses layout under CFG 9, which
    #: multiplies the caption's effect (0.3, ``full``: §2).
    controlnet_caption_dropout: float = 0.5
    #: ControlNet timestep draw: ``uniform`` (SD's) or ``cubic``, t = 1000 (1 - u³), T2I-Adapter's
    #: bias to the high-noise steps where the layout is decided.
    controlnet_timesteps: str = "uniform"
    checkpoint_every: int = 250

    def steps(self, phase: str) -> int:
        return int(getattr(self, f"{phase}_steps"))


#: Named sizes: ``v3`` (issue 19: 16x32 latents from a factor-4 VAE, no attention at the UNet's
#: full latent resolution, where 512-token self-attention made a step 5x slower), ``v1`` (8x16
#: latents), ``v2`` (v3, UNet 2500, ControlNet 3000), ``v4`` (v3, VAE 3000, ControlNet 5000),
#: ``v5`` (v4, UNet 5000: committed before, in the world without a rain and game gap),
#: ``v6short`` (v4 with VAE 2500, UNet 4500, ControlNet 4500 steps: 50 min, too short for night's
#: look), ``v7`` (v5 with offset noise and an EMA ControlNet, 57 min on 2 cores: committed before),
#: ``v11`` (v7 with ControlNet caption dropout 0.1: committed before, 57 min), ``full`` (v7 with
#: caption dropout 0.3: the committed weights, trained as the ``v12`` trial in the world with the
#: gentler game shade, 43 min), ``v8`` (v7 with a cosine ControlNet learning rate) and ``v9`` (v7
#: with Cityscapes-palette condition maps): trials on v7's VAE and UNet, ``v10`` (v7 with a
#: 1.5x-wide UNet and ControlNet, 4000 steps each, on v7's VAE), ``smoke``.
#: docs/fidelity.md §1.
_V2 = PocketSpec(
    vae_channels=(16, 32, 64),
    unet_steps=2500,
    unet_channels=(32, 64, 64),
    unet_blocks=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    controlnet_cond_channels=(16, 32, 64),
    controlnet_steps=3000,
)
_V4 = replace(_V2, vae_steps=3000, unet_steps=4000, controlnet_steps=5000, controlnet_lr=1e-3)
_V7 = replace(_V4, unet_steps=5000, noise_offset=0.1, controlnet_ema=True)
PRESETS: dict[str, PocketSpec] = {
    "full": replace(_V7, controlnet_caption_dropout=0.3),
    "v11": replace(_V7, controlnet_caption_dropout=0.1),
    "v7": _V7,
    "v8": replace(_V7, controlnet_lr_schedule="cosine"),
    "v9": replace(_V7, controlnet_palette="cityscapes"),
    "v10": replace(_V7, unet_channels=(48, 96, 96), unet_steps=4000, controlnet_steps=4000),
    "v5": replace(_V4, unet_steps=5000),
    "v6short": replace(_V4, vae_steps=2500, unet_steps=4500, controlnet_steps=4500),
    "v3": replace(_V2, unet_steps=4000, controlnet_steps=2000, controlnet_lr=1e-3),
    "v1": PocketSpec(),
    "v2": _V2,
    "v4": _V4,
    "smoke": PocketSpec(
        n_per_domain=4,
        n_heldout=2,
        batch_size=4,
        vae_steps=12,
        vae_channels=(8, 16, 16),
        unet_steps=12,
        unet_channels=(32, 32),
        unet_blocks=("DownBlock2D", "CrossAttnDownBlock2D"),
        text_width=32,
        controlnet_cond_channels=(8, 16, 16),
        controlnet_steps=12,
        checkpoint_every=5,
    ),
}


# 1. Training helpers --------------------------------------------------------------------------


def step_generator(seed: int, phase: str, step: int) -> Any:
    """The generator of one training step: a function of (seed, phase, step) only."""
    import torch

    return torch.Generator("cpu").manual_seed(
        int(np.random.SeedSequence([seed, PHASES.index(phase), step]).generate_state(1)[0])
    )


def run_phase(
    phase: str,
    spec: PocketSpec,
    out: Path,
    modules: dict[str, Any],
    loss_fn: Callable[[Any], Any],
    lr: float,
    weight_decay: float = 0.0,
    ema_decay: float | None = None,
    progress: bool = True,
    schedule: str = "constant",
) -> dict[str, Any]:
    """Train ``modules`` with AdamW on ``loss_fn(generator)`` at learning rate ``lr`` under
    diffusers' ``schedule`` (then copy in the EMA weights when ``ema_decay``), resuming from and
    checkpointing to ``checkpoints/<phase>.pt``; the summary: steps, loss on one fixed batch
    before/after, first/last loss (mean of 50 steps), seconds."""
    import torch
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total, ckpt = spec.steps(phase), out / "checkpoints" / f"{phase}.pt"
    lr_scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=0, num_training_steps=total)
    ema = EMAModel(params, decay=ema_decay) if ema_decay else None
    stateful = {**modules, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
    stateful.update({"ema": ema} if ema else {})

    def fixed_loss() -> float:  # same images, timesteps and noise every time
        with torch.no_grad():
            return float(loss_fn(step_generator(spec.seed, phase, 2**31 - 1)))

    state = {"step": 0, "losses": [], "seconds": 0.0}
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=params[0].device, weights_only=False)
        for name, part in stateful.items():
            part.load_state_dict(state["parts"][name])
    else:
        state["fixed_before"] = fixed_loss()
    losses = state["losses"]
    bar = tqdm(total=total, initial=state["step"], desc=f"pocket {phase}", disable=not progress)
    t0 = time.perf_counter() - state["seconds"]
    for step in range(state["step"], total):
        loss = loss_fn(step_generator(spec.seed, phase, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_scheduler.step()
        if ema is not None:
            ema.step(params)
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if (step + 1) % spec.checkpoint_every == 0 or step + 1 == total:
            parts = {name: part.state_dict() for name, part in stateful.items()}
            state.update(step=step + 1, seconds=time.perf_counter() - t0, parts=parts)
            torch.save(state, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
    bar.close()
    seconds = time.perf_counter() - t0
    k = min(50, len(losses) // 5 or 1)
    summary = {
        "steps": total,
        "fixed_batch_loss_before": state["fixed_before"],
        "fixed_batch_loss_after": fixed_loss(),
        "loss_first": float(np.mean(losses[:k])),
        "loss_last": float(np.mean(losses[-k:])),
        "seconds": round(seconds, 1),
    }
    if ema is not None:
        ema.copy_to(params)
    return summary


def training_noise(shape: Any, g: Any, offset: float) -> Any:
    """ε for the diffusion loss: standard normal, plus ``offset`` times one normal draw per image
    and channel (offset noise) when ``offset``; with 0 the same draw as before the field."""
    import torch

    eps = torch.randn(shape, generator=g)
    if offset:
        eps = eps + offset * torch.randn(*shape[:2], 1, 1, generator=g)
    return eps


def _batch(idx: Any, g: Any, *arrays: Any) -> list[Any]:
    """``arrays`` (aligned (N, C, H, W)) at ``idx``, each item flipped horizontally with
    probability 1/2 (the same items in every array)."""
    import torch

    flip = (torch.rand(len(idx), generator=g) < 0.5)[:, None, None, None].to(arrays[0].device)
    return [torch.where(flip, a[idx].flip(-1), a[idx]) for a in arrays]


def build_unet(spec: PocketSpec) -> Any:
    """A fresh ``UNet2DConditionModel`` of ``spec`` (diffusers' defaults: SD 1.5's 4 latent
    channels, 8-d heads), seeded by the caller."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=spec.height // 2 ** (len(spec.vae_channels) - 1),
        block_out_channels=tuple(spec.unet_channels),
        layers_per_block=1,
        down_block_types=tuple(spec.unet_blocks),
        up_block_types=tuple(b.replace("Down", "Up") for b in reversed(spec.unet_blocks)),
        cross_attention_dim=spec.text_width,
        norm_num_groups=spec.unet_norm_groups,
    )


def build_controlnet(unet: Any, spec: PocketSpec) -> Any:
    """A ``ControlNetModel`` copied from ``unet`` (ControlNet's initialisation), its condition
    encoder of ``spec``."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=tuple(spec.controlnet_cond_channels)
    )


# 2. The whole training ------------------------------------------------------------------------


def train_pocket(
    corpus: Corpus,
    out_dir: str | Path,
    spec: PocketSpec,
    *,
    threads: int | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Train VAE, UNet + text encoder and ControlNet on ``corpus`` on ``device`` (every random
    draw from the same CPU generators); write a diffusers folder (with ``controlnet/`` and
    ``checkpoints/``); return each phase's summary. Finished phases are loaded, not retrained."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.training_utils import compute_snr
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    state_path = out / "training_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"phases": {}}
    state["spec"] = stored_spec(state.get("spec", _spec_json(spec)))
    if state["spec"] != _spec_json(spec):
        raise ValueError(
            f"{out}: holds a training with other settings (training_state.json); "
            "use another --out or delete that folder"
        )
    state_path.write_text(json.dumps(state, indent=2))  # a resumed checkpoint is of this spec
    done = state["phases"]

    def finish(phase: str, summary: dict[str, Any], parts: dict[str, Any], **extra: Any) -> None:
        for name, part in parts.items():
            part.save_pretrained(out / name)
        done[phase] = {**summary, **extra}
        state_path.write_text(json.dumps(state, indent=2))

    dev = resolve_device(device, auto_half=False)[0]
    x_all = (torch.from_numpy(corpus.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(dev)
    n, bs = len(corpus), spec.batch_size

    # 1. VAE.
    if "vae" in done:
        vae = AutoencoderKL.from_pretrained(out / "vae").to(dev)
    else:
        torch.manual_seed(spec.seed)  # diffusers' defaults: SD 1.5's RGB and 4 latent channels
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * len(spec.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(spec.vae_channels),
            block_out_channels=tuple(spec.vae_channels),
            norm_num_groups=spec.vae_norm_groups,
            sample_size=spec.height,
        ).to(dev)

        def vae_loss(g: Any) -> Any:
            [x] = _batch(torch.randint(n, (bs,), generator=g), g, x_all)
            ch, cw = spec.vae_crop
            top = int(torch.randint(x.shape[2] - ch + 1, (1,), generator=g))
            left = int(torch.randint(x.shape[3] - cw + 1, (1,), generator=g))
            x = x[:, :, top : top + ch, left : left + cw]
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(dev)
            rec = vae.decode(z).sample
            kl = post.kl().mean() / z[0].numel()
            return F.l1_loss(rec, x) + F.mse_loss(rec, x) + spec.kl_weight * kl

        log = run_phase("vae", spec, out, {"vae": vae}, vae_loss, spec.vae_lr, progress=progress)
    vae.eval().requires_grad_(False)

    # Latents of the corpus (posterior mean and std, flipped together by _batch; frozen: no graph).
    dists = [vae.encode(x_all[i : i + 64]).latent_dist for i in range(0, n, 64)]
    lat_mean = torch.cat([d.mean for d in dists])
    lat_pair = torch.cat([lat_mean, torch.cat([d.std for d in dists])], dim=1)
    if "vae" not in done:  # 1 / std of the latents, as SD's 0.18215 was chosen
        vae.register_to_config(scaling_factor=float(1.0 / lat_mean.std()))
        finish("vae", log, {"vae": vae}, scaling_factor=vae.config.scaling_factor)
    scale = float(vae.config.scaling_factor)

    captions = sorted(set(corpus.captions))
    if not (out / "tokenizer" / "tokenizer_config.json").is_file():
        write_tokenizer(out / "tokenizer", [*captions, "lower quality, worst quality"])
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    cap_index = torch.tensor([captions.index(c) for c in corpus.captions])
    # Every caption's tokens, then the empty caption's (index len(captions): a dropped caption).
    all_ids = tokenizer(
        [*captions, ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    maps = np.stack([render_condition(lab, spec.controlnet_palette) for lab in corpus.labels])
    cond_all = torch.from_numpy(maps).permute(0, 3, 1, 2).to(dev)  # uint8: [0, 1] per batch

    def diffusion_loss(g: Any, controlnet: Any = None) -> Any:
        """ε-loss of the UNet (guided by ``controlnet`` from the condition maps when given)."""
        idx = torch.randint(n, (bs,), generator=g)
        pair, cond = _batch(idx, g, lat_pair, cond_all)
        mean, std = pair.chunk(2, dim=1)
        z0 = (mean + std * torch.randn(mean.shape, generator=g).to(dev)) * scale
        if controlnet is not None and spec.controlnet_timesteps == "cubic":
            t = ((1 - torch.rand(len(idx), generator=g) ** 3) * 1000).long().clamp(max=999)
        else:
            t = torch.randint(0, 1000, (len(idx),), generator=g)
        t, eps = t.to(dev), training_noise(z0.shape, g, spec.noise_offset).to(dev)
        z_t = scheduler.add_noise(z0, eps, t)
        which = cap_index[idx].clone()
        dropout = spec.caption_dropout if controlnet is None else spec.controlnet_caption_dropout
        which[torch.rand(len(idx), generator=g) < dropout] = len(captions)
        emb = text_encoder(all_ids[which].to(dev))[0] if controlnet is None else all_emb[which]
        down, mid = (None, None) if controlnet is None else controlnet(
            z_t, t, encoder_hidden_states=emb, controlnet_cond=cond.float() / 255.0,
            return_dict=False,
        )  # fmt: skip
        pred = unet(
            z_t, t, encoder_hidden_states=emb,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample  # fmt: skip
        per_sample = ((pred - eps) ** 2).mean(dim=(1, 2, 3))
        snr = compute_snr(scheduler, t)
        return (per_sample * (snr.clamp(max=spec.snr_gamma) + 1) / snr).mean()

    # 2. UNet + text encoder.
    if "unet" in done:
        unet = UNet2DConditionModel.from_pretrained(out / "unet").to(dev)
        text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder").to(dev)
    else:
        torch.manual_seed(spec.seed + 1)
        unet = build_unet(spec).to(dev)
        text = clip_text_config(tokenizer, spec.text_width, 2 * spec.text_width)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text)).to(dev)
        parts = {"unet": unet, "text_encoder": text_encoder}
        summary = run_phase(
            "unet", spec, out, parts, diffusion_loss, spec.unet_lr, 0.01, spec.ema_decay, progress
        )
        finish("unet", summary, {**parts, "scheduler": scheduler})
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)

    # 3. ControlNet on condition maps in the spec's palette, base frozen.
    if "controlnet" not in done:
        torch.manual_seed(spec.seed + 2)
        controlnet = build_controlnet(unet, spec).to(dev)
        all_emb = text_encoder(all_ids.to(dev))[0]  # frozen weights: no graph
        summary = run_phase(
            "controlnet", spec, out, {"controlnet": controlnet},
            lambda g: diffusion_loss(g, controlnet), spec.controlnet_lr,
            ema_decay=spec.ema_decay if spec.controlnet_ema else None, progress=progress,
            schedule=spec.controlnet_lr_schedule,
        )  # fmt: skip
        finish("controlnet", summary, {"controlnet": controlnet})

    write_model_index(out)
    return done


def _spec_json(spec: PocketSpec) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(spec)))


def stored_spec(spec_json: dict[str, Any]) -> dict[str, Any]:
    """A ``training_state.json``'s spec, with the defaults of the fields added since it was
    written: a field is added with the default that keeps the old behaviour."""
    return {**_spec_json(PocketSpec()), **spec_json}
