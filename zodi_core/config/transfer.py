"""Where the diffusion models come from and how an image is transferred: domains, prompts,
strengths (SPEC §2), :class:`ModelsConfig`, :class:`DomainSettings`, :class:`TransferConfig`."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from zodi_core.config.base import Device, Dtype, NonEmptyStr, NonEmptyTuple, _Config, expect

#: A domain name becomes a folder and an S3 key part (``paired/domain=<name>/...``): 1-64
#: characters, lowercase letters, digits, ``-`` and ``_``, starting with a letter or digit.
DOMAIN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DOMAIN_NAME_RULE = (
    "1-64 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
)


def check_domain_name(name: Any) -> str:
    """``name`` when it is a valid domain name, else ValueError saying what is allowed."""
    if not isinstance(name, str) or not DOMAIN_NAME_RE.fullmatch(name):
        raise ValueError(f"domain name: expected {DOMAIN_NAME_RULE} (e.g. 'dusk')")
    return name


#: A target domain's name: a plain string, validated by :func:`check_domain_name`.
DomainName = Annotated[str, AfterValidator(check_domain_name)]


#: The paper's five target domains, built in (SPEC §2): the text that follows "driving" in the
#: prompt, and the transfer strength of the authors' release. Any other name is a user-defined
#: domain, valid once a config or the prompt config gives it a prompt.
_BUILT_IN = {
    "night": ("at night", 0.90),
    "snow": ("in snow", 0.65),
    "rain": ("under rain", 0.65),
    "fog": ("in fog", 0.60),
    "game": ("in a game", 0.60),
}
DOMAIN_PHRASES = {domain: phrase for domain, (phrase, _) in _BUILT_IN.items()}
DOMAIN_STRENGTHS = {domain: strength for domain, (_, strength) in _BUILT_IN.items()}
DOMAINS = tuple(_BUILT_IN)
#: Strength of a user-defined domain that sets none (the paper's snow and rain value).
USER_DOMAIN_STRENGTH = 0.65
SD15_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CONTROLNET_SEG_ID = "lllyasviel/control_v11p_sd15_seg"
CLIP_MODEL_ID = "openai/clip-vit-large-patch14"


class ModelsConfig(_Config):
    """Where the diffusion components come from."""

    base: NonEmptyStr = Field(SD15_MODEL_ID, description="Hub id or folder of Stable Diffusion 1.5")
    controlnet: NonEmptyStr | None = Field(
        CONTROLNET_SEG_ID,
        description="Hub id or local folder of the segmentation ControlNet; None: <base>/controlnet",
    )
    revision: NonEmptyStr | None = Field(
        None,
        description="Hub revision (branch, tag or commit) of the base model, resolved to its "
        "commit at load and recorded; a commit pins it (None: main)",
    )
    controlnet_revision: NonEmptyStr | None = Field(
        None, description="Hub revision of the ControlNet (as revision; None: main)"
    )


#: The transfer's and a domain's strength S, in (0, 1].
Strength = Annotated[float, expect(lambda v: 0.0 < v <= 1.0, "a strength in (0, 1]")]
#: A prompt: any non-blank text.
Prompt = Annotated[str, expect(str.strip, "a non-empty prompt", lambda _: "an empty string")]


def _one_of_prompt_fields(config: Any) -> Any:
    if config.prompt is not None and config.prompts:
        raise ValueError("prompt, prompts: set one of them, not both")
    return config


def check_prompt(field: str, domain: str, settings: Any) -> None:
    """ValueError naming ``field`` unless ``domain`` is built in or ``settings`` (a transfer
    config, with its settings for ``domain``, or one domain's settings) gives it a prompt."""
    pair = (settings, getattr(settings, "domain_settings", {}).get(domain))
    if domain not in DOMAIN_PHRASES and not any(s and (s.prompt or s.prompts) for s in pair):
        raise ValueError(
            f"{field}: {domain!r} has no prompt; give it one (transfer.prompt, "
            f"transfer.domain_settings.{domain}.prompt, or the prompt config's "
            f"domains.{domain}.prompt) or use a built-in domain ({', '.join(DOMAINS)})"
        )


def choose_prompt(prompts: tuple[str, ...] | list[str], seed: int) -> str:
    """The prompt of one image: ``prompts[seed mod len(prompts)]`` of its per-image seed.

    Deterministic (same seed, same prompt) and independent of batching; with one prompt, it.
    """
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, received none")
    return prompts[int(seed) % len(prompts)]


class DomainSettings(_Config):
    """One domain's prompt settings; a field left None keeps the transfer config's value."""

    prompt: Prompt | None = Field(None, description="The domain's prompt")
    prompts: NonEmptyTuple[Prompt] | None = Field(
        None, description="Several prompts; each image picks one from its per-image seed"
    )
    negative_prompt: str | None = Field(None, description="CFG negative prompt")
    strength: Strength | None = Field(None, description="S in (0, 1]")
    seed_offset: int | None = Field(
        None, ge=0, lt=2**32, description="Added to the global seed for this domain"
    )

    check_one_of = model_validator(mode="after")(_one_of_prompt_fields)


#: TransferConfig fields that change speed, not the generated pixels (up to float rounding):
#: left out of the generation digest (zodi_core.transfer.lineage.transfer_digest), so switching
#: one reuses the images already made.
TRANSFER_SPEED_LEVERS = (
    "batch_size",
    "compile",
    "channels_last",
    "sdpa_backend",
    "cudnn_benchmark",
    "tf32",
)


class TransferConfig(_Config):
    """Zero-shot image transfer (SPEC §2).

    A domain's settings come, most specific first, from ``domain_settings[domain]``, the fields
    ``prompt``/``prompts``, ``negative_prompt``, ``strength``, ``seed_offset``, and for the
    paper's five domains the built-in phrase and strength. :meth:`resolved` folds them into the
    plain fields; the sampler and the runner work on the resolved config.
    """

    domain: DomainName = Field(
        "night",
        description="Target domain: a built-in one (night, snow, rain, fog, game) or a "
        "name with a prompt (" + DOMAIN_NAME_RULE + ")",
    )
    prompt: Prompt | None = Field(None, description="None: 'driving <domain phrase>'+prompt_suffix")
    prompts: tuple[Prompt, ...] = Field(
        (),
        description="Several prompts (instead of prompt); each image picks one from its "
        "per-image seed (seed mod count) and its manifest row records which; with "
        "seed_policy 'global' (the paper preset) every image has one seed, hence one prompt",
    )
    prompt_suffix: str = Field(", best quality", description="Appended to the derived prompt")
    negative_prompt: str = Field(
        "lower quality, worst quality",
        description="CFG negative prompt ('' for the pocket models: their unconditional branch is "
        "the empty caption)",
    )
    strength: Strength | None = Field(None, description="S in (0, 1]; None: the domain's default")
    seed_offset: int = Field(
        0, ge=0, lt=2**32, description="Added to `seed` (a domain's own seed stream)"
    )
    domain_settings: dict[DomainName, DomainSettings] = Field(
        default_factory=dict,
        description="Per-domain prompt(s), negative prompt, strength, seed offset: defines "
        "user domains (e.g. dusk) and overrides the built-in five",
    )
    num_inference_steps: int = Field(
        20, ge=1, le=1000, description="T, DDIM steps of the full schedule (at most the 1000 "
        "training timesteps)"
    )  # fmt: skip
    eta: float = Field(
        1.0, ge=0.0, le=1.0,
        description="DDIM eta in [0, 1]; 1.0 is stochastic as in the release (above 1 the "
        "DDIM variance exceeds the step's)",
    )  # fmt: skip
    guidance_scale: float = Field(9.0, ge=0.0, description="Classifier-free guidance scale")
    controlnet_conditioning_scale: float = Field(
        1.0, ge=0.0, description="ControlNet residual scale"
    )
    timestep_spacing: Literal["leading", "trailing", "linspace"] = Field(
        "leading", description="DDIM timestep grid; SD 1.5 uses 'leading' (1, 51, ..., 951)"
    )
    timestep_mode: Literal["consistent", "release"] = Field(
        "consistent",
        description="'consistent': noise, invert and denoise at one t; 'release': noise at "
        "floor(1000*S), denoise from the grid step below (the authors' defect)",
    )
    palette: Literal["ade20k", "cityscapes"] = Field(
        "ade20k", description="Condition-map palette; ControlNet seg was trained on ADE20K"
    )
    method: Literal["zodi", "sdedit", "inst", "wo_si"] = Field(
        "zodi",
        description="zodi; Table 2 ablations: sdedit (no ControlNet, random noise), inst (no "
        "ControlNet, stochastic inversion), wo_si (ControlNet, random noise)",
    )
    seed: int = Field(42, ge=0, lt=2**62, description="Global seed")
    seed_policy: Literal["per_image", "global"] = Field(
        "per_image",
        description="'per_image': seed from (seed, sample_id); 'global': every image reseeded "
        "with `seed` as the release does",
    )
    short_side: int = Field(512, ge=8, le=8192, description="Generation short side in pixels")
    size_multiple: int = Field(
        64, ge=8, le=1024, multiple_of=8,
        description="Generation sides are multiples of this (of 8: the VAE's downsampling)",
    )  # fmt: skip
    resize_to_source: bool = Field(False, description="Resize outputs back to source resolution")
    device: Device = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    dtype: Dtype = Field(
        "auto", description="'auto': float16 on CUDA, float32 on CPU; changes pixels: in the digest"
    )
    # The speed levers (TRANSFER_SPEED_LEVERS), not in the digest:
    batch_size: int = Field(4, ge=1, description="Images per sampler call")
    compile: bool = Field(
        False, description="torch.compile UNet and ControlNet, static shapes (tail chunk padded)"
    )
    channels_last: bool = Field(
        False, description="NHWC for UNet, ControlNet, VAE (off: 7% slower on an H200)"
    )
    sdpa_backend: Literal["auto", "math", "flash", "efficient", "cudnn"] = Field(
        "auto", description="UNet and ControlNet attention kernel (sdpa_kernel); 'auto': torch's"
    )
    cudnn_benchmark: bool = Field(True, description="cuDNN autotunes convolutions per shape")
    tf32: bool = Field(True, description="TF32 for float32 matmuls and convolutions (CUDA)")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Model sources")

    check_one_of = model_validator(mode="after")(_one_of_prompt_fields)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.short_side % self.size_multiple:
            raise ValueError(
                f"short_side: expected a multiple of size_multiple={self.size_multiple}, "
                f"received {self.short_side}"
            )
        offsets = [s.seed_offset or 0 for s in self.domain_settings.values()]
        if self.seed + self.seed_offset + max(offsets, default=0) >= 2**62:
            raise ValueError(
                f"seed: expected seed + seed offsets < 2**62 (the resolved seed), received "
                f"{self.seed} + {self.seed_offset} + {max(offsets, default=0)}"
            )
        check_prompt("domain", self.domain, self)
        return self

    def resolved(self) -> TransferConfig:
        """This config with ``domain_settings[domain]`` folded into the plain fields (its prompt
        replaces prompts, and its prompts a prompt: it never sets both), the seed offset into
        ``seed`` and the other domains' settings dropped (idempotent): what the sampler uses and
        what the generation digest covers."""
        if not self.domain_settings and not self.seed_offset:
            return self
        own = self.domain_settings.get(self.domain)
        own = own.model_dump(exclude_none=True) if own else {}
        if own.keys() & {"prompt", "prompts"}:
            own = {"prompt": None, "prompts": ()} | own
        seed = self.seed + own.pop("seed_offset", self.seed_offset)
        return self.replace(**own, seed=seed, seed_offset=0, domain_settings={})

    @property
    def effective_prompts(self) -> tuple[str, ...]:
        """The domain's prompts: several, one, or the built-in 'driving <phrase>'+suffix."""
        r = self.resolved()
        return r.prompts or (
            r.prompt or f"driving {DOMAIN_PHRASES[self.domain]}{self.prompt_suffix}",
        )

    @property
    def effective_prompt(self) -> str:
        """The prompt, or the first of several (each image's: :meth:`prompt_for`)."""
        return self.effective_prompts[0]

    def prompt_for(self, seed: int) -> str:
        """The prompt of the image whose per-image seed is ``seed`` (:func:`choose_prompt`)."""
        return choose_prompt(self.effective_prompts, seed)

    @property
    def effective_negative_prompt(self) -> str:
        return self.resolved().negative_prompt

    @property
    def effective_strength(self) -> float:
        default = DOMAIN_STRENGTHS.get(self.domain, USER_DOMAIN_STRENGTH)
        return self.resolved().strength or default  # a strength is > 0: None gives way

    @property
    def effective_seed(self) -> int:
        """``seed`` plus the domain's seed offset."""
        return self.resolved().seed

    _presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {
            "palette": "cityscapes",
            "timestep_mode": "release",
            "seed_policy": "global",
            "batch_size": 1,
        },
        "demo": {
            "num_inference_steps": 4,
            "short_side": 64,
            "size_multiple": 64,
            "batch_size": 4,
            "device": "cpu",
            "guidance_scale": 3.0,
        },
    }
