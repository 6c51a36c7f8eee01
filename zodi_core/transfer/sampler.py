"""The ZoDi image-transfer sampler (SPEC §2, paper §3.2 and App. A), batched, on diffusers parts.

For each source image x with train-id map y (paper Eq. numbers in brackets):

1. z0 = E(x) · scaling_factor.
2. k = ⌊T·S⌋ denoising steps [Eq. 9]; the schedule is the last k steps of the T-step DDIM grid
   and t is its first timestep.
3. Stochastic inversion: z_t = α_t z0 + σ_t ε with ε ~ N(0, I) [Eq. 1]; ε_k = ε_θ(z_t, t, c_p, y),
   conditional branch only, no CFG [Eq. 4]; z'_k = α_t z0 + σ_t ε_k [Eq. 5].
4. k DDIM steps from z'_k with classifier-free guidance (both branches in one batched
   UNet + ControlNet call) and ControlNet on the rendered condition; x' = D(z0').

Switches (TransferConfig): ``timestep_mode="release"`` noises and inverts at t = ⌊1000·S⌋ but
denoises from the grid step below it, as the authors' release does; ``method`` selects the Table 2
ablations (sdedit: no ControlNet, random noise; inst: no ControlNet, inversion; wo_si: ControlNet,
random noise). Every image draws its noise from its own CPU generator seeded from
(seed, sample_id), in a fixed order (ε, then one variance noise per DDIM step), so an image's
output does not depend on batch size, composition or order.

Compiled models see static shapes only (a tail chunk padded to the batch size, 0-d timesteps),
so nothing compiles twice. Torch is imported inside functions: the runner, preview and
``zodi_core.prompts`` import the pure helpers without loading it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zodi_core.conditions import render_condition, resize_image
from zodi_core.config import TransferConfig
from zodi_core.device import attention_kernel, resolve_device, speed_levers
from zodi_core.labels import check_train_ids
from zodi_core.transfer.lineage import transfer_digest
from zodi_core.transfer.models import Components

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Methods that run the inversion ε prediction (Eq. 4–5) / use the ControlNet.
INVERTING_METHODS = ("zodi", "inst")
CONTROLNET_METHODS = ("zodi", "wo_si")


# 1. Pure helpers: schedule, size, seeds -----------------------------------------------------


def denoising_steps(num_inference_steps: int, strength: float) -> int:
    """k = ⌊T·S⌋ (Eq. 9), rounded to 9 decimals first (20·0.65 = 13.000000000000002 is 13).

    Raises ValueError: strength outside (0, 1], steps < 1, or k = 0.
    """
    if num_inference_steps < 1:
        raise ValueError(
            f"num_inference_steps: expected an integer >= 1, received {num_inference_steps}"
        )
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength: expected a value in (0, 1], received {strength}")
    k = math.floor(round(num_inference_steps * strength, 9))
    if k < 1:
        raise ValueError(
            f"strength: {strength} × num_inference_steps {num_inference_steps} gives k = 0 "
            "denoising steps; raise the strength or the number of steps"
        )
    return k


@dataclass(frozen=True)
class TimestepPlan:
    """Where the sampler noises, inverts and denoises."""

    k: int
    #: (k,) int64 denoising timesteps, descending: scheduler.timesteps[T-k:].
    timesteps: Any
    #: t of Eq. 1, 4 and 5 (noising and the inversion ε prediction).
    noise_timestep: int
    #: timesteps[0]: where denoising starts.
    first_timestep: int


def plan_timesteps(scheduler: Any, config: TransferConfig) -> TimestepPlan:
    """Set the scheduler's T-step grid (``config.timestep_spacing``) and keep its last k steps.

    ``consistent``: noise, invert and denoise at the first kept timestep. ``release``: noise and
    invert at ⌊1000·S⌋ (clipped to 999), denoise from the grid step below it (fog: 600 vs 551),
    the release's mismatch (SPEC "known defects").
    """
    T = config.num_inference_steps
    k = denoising_steps(T, config.effective_strength)
    scheduler.register_to_config(timestep_spacing=config.timestep_spacing)
    scheduler.set_timesteps(T)
    timesteps = scheduler.timesteps[T - k :]
    t_noise = int(timesteps[0])
    if config.timestep_mode == "release":
        num_train = int(scheduler.config.num_train_timesteps)
        t_noise = min(math.floor(round(num_train * config.effective_strength, 9)), num_train - 1)
    return TimestepPlan(k, timesteps, t_noise, int(timesteps[0]))


def generation_size(width: int, height: int, short_side: int, multiple: int) -> tuple[int, int]:
    """(width, height) to generate at: short side ``short_side``, both sides multiples of
    ``multiple``, aspect ratio kept as closely as the rounding allows (2048×1024 → 1024×512)."""
    scale = short_side / min(width, height)
    w, h = (max(multiple, round(v * scale / multiple) * multiple) for v in (width, height))
    return w, h


def sample_seed(seed: int, sample_id: str, policy: str = "per_image") -> int:
    """The seed of one image's generator: ``per_image``, sha256 of (seed, sample_id) (the same
    on every run and machine); ``global``, ``seed`` itself (the release reseeds 42 per image)."""
    if policy == "global":  # (config.seed_policy is one of the two)
        return int(seed)
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def validate_pair(image: np.ndarray, label: np.ndarray, name: str = "sample") -> None:
    """Check an (H, W, 3) uint8 RGB image and its (H, W) train-id map (0..18, 255); a
    ValueError names ``name``, what was expected and what was received."""
    image, label = np.asarray(image), np.asarray(label)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{name}: image expected (H, W, 3) uint8, received shape {image.shape} {image.dtype}"
        )
    if label.ndim != 2:
        raise ValueError(f"{name}: label expected an (H, W) map, received shape {label.shape}")
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"{name}: label size {label.shape[1]}x{label.shape[0]} differs from image size "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    try:
        check_train_ids(label)
    except ValueError as err:
        raise ValueError(f"{name}: label {err}") from None


# 2. The sampler ------------------------------------------------------------------------------


@dataclass
class TransferOutput:
    """One generated image and its lineage."""

    #: (H, W, 3) uint8 RGB: generation size, or the source size with ``resize_to_source``.
    image: np.ndarray
    #: :meth:`TransferSampler.lineage` plus seconds, width and height.
    metadata: dict[str, Any]


class TransferSampler:
    """Batched ZoDi transfer on components passed in (see module docstring for the equations).

    ``config`` is resolved here once (``__call__`` may pass another); its ``channels_last`` and
    ``compile`` apply here, the other speed levers per call.
    """

    def __init__(
        self,
        components: Components,
        config: TransferConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        compile_backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        import torch

        self.config = (config or TransferConfig()).resolved()
        # device/dtype override the config's: bench/transfer.py counts FLOPs on the meta device
        dev, dt = resolve_device(self.config.device, self.config.dtype)
        self.device, self.dtype = torch.device(device or dev), dtype or dt
        self.components = components
        parts = (components.unet, components.controlnet, components.vae, components.text_encoder)
        self.unet, self.controlnet, self.vae, self.text_encoder = map(self._place, parts)
        self.tokenizer = components.tokenizer
        # A private scheduler: set_timesteps mutates it, and samplers sharing components may run
        # in parallel threads (Prefect shard tasks) with different step counts.
        self.scheduler = copy.deepcopy(components.scheduler)
        if self.config.channels_last:
            # NHWC: cuDNN's tensor-core layout; off by default until the GPU check shows a gain
            for m in (self.unet, self.controlnet, self.vae):
                m.to(memory_format=torch.channels_last)
        #: compiled models see one batch size per generation size: chunks are padded to it
        self.static_batch = self.config.compile
        if self.config.compile:
            self.unet, self.controlnet = (
                torch.compile(m, dynamic=False, backend=compile_backend)
                for m in (self.unet, self.controlnet)
            )
        self._prompt_cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _place(self, module: Any) -> Any:
        # Cast only when needed: diffusers warns on every dtype cast of a loaded model.
        if getattr(module, "dtype", self.dtype) != self.dtype:
            return module.to(self.device, self.dtype)
        return module.to(self.device)

    # -- building blocks (public: tests and the benchmark call them) --

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode_prompt(self, prompt: str, negative_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative, positive) text embeddings, each (1, 77, D) in the model dtype."""
        import torch

        key = (prompt, negative_prompt)
        if key not in self._prompt_cache:
            tokens = self.tokenizer([negative_prompt, prompt], padding="max_length", truncation=True,
                                    max_length=self.tokenizer.model_max_length,
                                    return_tensors="pt").input_ids.to(self.device)  # fmt: skip
            with torch.inference_mode():
                emb = self.text_encoder(tokens)[0].to(self.dtype)
            self._prompt_cache[key] = (emb[:1], emb[1:])
        return self._prompt_cache[key]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """z0 = E(x)·scaling_factor: (N, 3, H, W) in [-1, 1] → (N, 4, H/8, W/8) float32; the
        posterior mean (its std is negligible next to Eq. 1's noise; no extra random draw)."""
        import torch

        x = images.to(self.device, self.dtype)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.vae.encode(x).latent_dist.mean
        return z.float() * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """x' = D(z0'/scaling_factor): (N, 4, h, w) → (N, 3, 8h, 8w) float32 in [-1, 1]."""
        z = (latents / self.vae.config.scaling_factor).to(self.dtype)
        return self.vae.decode(z, return_dict=False)[0].float().clamp(-1, 1)

    def predict_noise(
        self,
        latents: torch.Tensor,
        t: int | torch.Tensor,
        embeddings: torch.Tensor,
        control: torch.Tensor | None,
        conditioning_scale: float,
    ) -> torch.Tensor:
        """ε_θ(z_t, t, c_p, y): (B, 4, h, w) float32, from one ControlNet call (``control``:
        (B, 3, 8h, 8w) in [0, 1], or None for none) and one UNet call; embeddings (B, 77, D)."""
        x = latents.to(self.dtype)
        extra: dict[str, Any] = {}
        if control is not None:
            down, mid = self.controlnet(
                x,
                t,
                encoder_hidden_states=embeddings,
                controlnet_cond=control.to(self.dtype),
                conditioning_scale=conditioning_scale,
                return_dict=False,
            )
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        out = self.unet(x, t, encoder_hidden_states=embeddings, return_dict=False, **extra)[0]
        return out.float()

    def start_latents(
        self,
        z0: torch.Tensor,
        noise: torch.Tensor,
        plan: TimestepPlan,
        positive: torch.Tensor,
        control: torch.Tensor | None,
        config: TransferConfig,
    ) -> torch.Tensor:
        """The latent the k denoising steps start from: z_t = α_t z0 + σ_t ε [Eq. 1] (sdedit,
        wo_si), or with the inversion (zodi, inst) ε_k = ε_θ(z_t, t, c_p, y), conditional branch
        only [Eq. 4], and z'_k = α_t z0 + σ_t ε_k [Eq. 5]. z0, noise: (N, 4, h, w) float32."""
        import torch

        abar = float(self.scheduler.alphas_cumprod[plan.noise_timestep])  # ᾱ_t
        a, s = math.sqrt(abar), math.sqrt(1.0 - abar)
        z_t = a * z0 + s * noise
        if config.method not in INVERTING_METHODS:
            return z_t
        ctrl = control if config.method in CONTROLNET_METHODS else None
        # a 0-d tensor, not a Python int: a compiled model would specialise on the int and
        # compile a graph per strength
        t = torch.tensor(plan.noise_timestep, dtype=torch.int64, device=self.device)
        positive = positive.expand(z0.shape[0], -1, -1).contiguous()
        eps_k = self.predict_noise(z_t, t, positive, ctrl, config.controlnet_conditioning_scale)
        return a * z0 + s * eps_k

    # -- the whole transfer --

    def __call__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        sample_ids: Sequence[str],
        config: TransferConfig | None = None,
    ) -> list[TransferOutput]:
        """Transfer ``images`` (each (H, W, 3) uint8 RGB, sizes may differ) with their ``labels``
        ((H, W) uint8 train ids) to ``config.domain`` (default: the sampler's config); one
        :class:`TransferOutput` per input, in input order. ``sample_ids`` seed the generators.
        RuntimeError when out of GPU memory even at batch size 1.
        """
        import torch

        config = self.config if config is None else config.resolved()
        groups: dict[tuple[int, int], list[int]] = {}  # indices by generation size
        for i, (img, lab, sid) in enumerate(zip(images, labels, sample_ids, strict=True)):
            validate_pair(img, lab, f"sample {sid!r}")
            size = generation_size(*img.shape[1::-1], config.short_side, config.size_multiple)
            groups.setdefault(size, []).append(i)
        plan = plan_timesteps(self.scheduler, config)
        digest = transfer_digest(config)
        results: dict[int, TransferOutput] = {}
        for size, idx in groups.items():
            batch = config.batch_size
            while idx:
                chunk = idx[:batch]
                inputs = ([seq[i] for i in chunk] for seq in (images, labels, sample_ids))
                try:
                    outs, seconds = self._run_chunk(*inputs, size, plan, config, batch)
                except RuntimeError as err:  # (CUDA's OutOfMemoryError says "out of memory" too)
                    if "out of memory" not in str(err).lower():
                        raise
                    torch.cuda.empty_cache()  # a no-op unless CUDA was initialised
                    if batch == 1:
                        raise RuntimeError(
                            f"out of GPU memory on {self.device} at batch size 1 for a "
                            f"{size[0]}x{size[1]} image ({self.dtype}); lower short_side, or use "
                            "a GPU with more memory"
                        ) from None
                    batch = max(1, batch // 2)  # halve and retry: per-image seeds keep outputs
                    if self.static_batch:
                        log.warning(
                            "out of GPU memory at batch size %d: batch halved to %d; the "
                            "compiled models compile this new shape once (set batch_size=%d)",
                            batch * 2, batch, batch,
                        )  # fmt: skip
                    continue
                for i, out in zip(chunk, outs, strict=True):
                    meta = self.lineage(config, sample_ids[i], digest, plan)
                    meta.update(seconds=seconds, width=out.shape[1], height=out.shape[0])
                    results[i] = TransferOutput(out, meta)
                idx = idx[len(chunk) :]
        return [results[i] for i in range(len(images))]

    def lineage(
        self,
        config: TransferConfig,
        sample_id: str,
        digest: str,
        plan: TimestepPlan | None = None,
    ) -> dict[str, Any]:
        """What one image's output depends on (``digest`` its config_digest). ``config``:
        resolved; ``plan``: :func:`plan_timesteps`' (computed when None)."""
        plan = plan or plan_timesteps(self.scheduler, config)
        seed = sample_seed(config.seed, sample_id, config.seed_policy)
        return {
            "seed": seed,
            "strength": config.effective_strength,
            "k": plan.k,
            "first_timestep": plan.first_timestep,
            "noise_timestep": plan.noise_timestep,
            "prompt": config.prompt_for(seed),
            "negative_prompt": config.negative_prompt,
            "palette": config.palette,
            "method": config.method,
            "model_revisions": dict(self.components.revisions),
            "config_digest": digest,
        }

    def _run_chunk(
        self,
        images: list[np.ndarray],
        labels: list[np.ndarray],
        sample_ids: list[str],
        size: tuple[int, int],
        plan: TimestepPlan,
        config: TransferConfig,
        batch: int,
    ) -> tuple[list[np.ndarray], float]:
        """One chunk of at most ``batch`` images of one generation size; with compiled models
        (``static_batch``) padded to ``batch`` rows (copies of the last image, outputs dropped)."""
        import torch

        t0 = time.perf_counter()
        n = len(images)
        if self.static_batch and n < batch:
            pad = batch - n  # copies of the last image: the same seed, prompt and noise
            images, labels, sample_ids = (v + v[-1:] * pad for v in (images, labels, sample_ids))
        x = torch.from_numpy(np.stack([resize_image(im, size) for im in images]))
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        cond = np.stack([render_condition(lab, config.palette, size) for lab in labels])
        control = torch.from_numpy(cond).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
        seeds = [sample_seed(config.seed, sid, config.seed_policy) for sid in sample_ids]
        latent_shape = (4, size[1] // self.vae_scale, size[0] // self.vae_scale)
        # Every draw up front, copied once (no host-device sync inside the loop): image i's CPU
        # generator (the same values on every device, in any batch) yields ε of Eq. 1, then one
        # variance noise per DDIM step: (1 + k or 1, N, 4, h, w).
        steps = range(1 + (plan.k if config.eta > 0 else 0))
        gens = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        draws = [torch.stack([torch.randn(latent_shape, generator=g) for _ in steps]) for g in gens]
        noise = torch.stack(draws, dim=1).to(self.device)
        eps, step_noise = noise[0], noise[1:]
        # each image's prompt (one of config.prompts, chosen by its seed): one embedding each
        pairs = [self.encode_prompt(config.prompt_for(s), config.negative_prompt) for s in seeds]
        negative, positive = pairs[0][0], torch.cat([p[1] for p in pairs])
        out = self.generate(x, control, eps, step_noise, negative, positive, plan, config)[:n]
        arr = ((out + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        arr = arr.permute(0, 2, 3, 1).cpu().numpy()
        if config.resize_to_source:  # (the padding rows' images have no output)
            arr = [resize_image(im, src.shape[1::-1]) for im, src in zip(arr, images, strict=False)]
        return [np.ascontiguousarray(im) for im in arr], (time.perf_counter() - t0) / n

    def generate(
        self,
        x: torch.Tensor,
        control: torch.Tensor,
        eps: torch.Tensor,
        step_noise: torch.Tensor,
        negative: torch.Tensor,
        positive: torch.Tensor,
        plan: TimestepPlan,
        config: TransferConfig,
    ) -> torch.Tensor:
        """Steps 1-4 of one batch under the config's speed levers: x (N, 3, H, W) float32 in
        [-1, 1], control (N, 3, H, W) in [0, 1], eps (N, 4, h, w), step_noise (k or 0, N, 4, h,
        w), negative (1, 77, D), positive (1 or N, 77, D) → (N, 3, H, W) float32 in [-1, 1].

        The k DDIM steps run CFG with both branches in ONE batched ControlNet + UNet call;
        ``step_noise`` is each image's own variance noise (DDIMScheduler.step takes one
        generator, hence ``variance_noise``)."""
        import torch

        levers = speed_levers(self.device, cudnn_benchmark=config.cudnn_benchmark, tf32=config.tf32)
        # sdpa_backend: the loop's kernel; the VAE keeps torch's (its 512-wide head: no flash/cuDNN)
        attention = attention_kernel(config.sdpa_backend)
        n = x.shape[0]
        embeddings = torch.cat([negative.expand(n, -1, -1), positive.expand(n, -1, -1)])
        ctrl = None
        if config.method in CONTROLNET_METHODS:
            ctrl = torch.cat([control, control])  # same ControlNet scale on both branches (release)
        # the models' timesteps on their device (0-d tensors: no graph per value, no copy per
        # call); the scheduler indexes its CPU tables with the CPU ones
        model_timesteps = plan.timesteps.to(self.device)
        cond_scale = config.controlnet_conditioning_scale
        with levers, torch.inference_mode():
            try:
                z0 = self.encode(x)
                with attention:
                    latents = self.start_latents(z0, eps, plan, positive, control, config)
                    for i, t in enumerate(plan.timesteps):
                        both = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
                        noise = self.predict_noise(
                            both, model_timesteps[i], embeddings, ctrl, cond_scale
                        )
                        uncond, cond = noise.chunk(2)
                        guided = uncond + config.guidance_scale * (cond - uncond)
                        variance = step_noise[i] if config.eta > 0 else None
                        latents = self.scheduler.step(
                            guided, t, latents, eta=config.eta, variance_noise=variance
                        ).prev_sample
                return self.decode(latents)
            except RuntimeError as err:
                message = str(err).lower()
                if config.sdpa_backend != "auto" and (
                    "no available kernel" in message or "no viable backend" in message
                ):
                    raise ValueError(
                        f"sdpa_backend: {config.sdpa_backend!r} has no attention kernel for "
                        f"these inputs on {self.device} ({self.dtype}); use 'auto'"
                    ) from None
                raise
