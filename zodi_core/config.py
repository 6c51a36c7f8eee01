"""Typed, frozen configuration for every stage of the pipeline.

Each config is a pydantic model (frozen, unknown keys rejected) whose fields carry a one-line
doc. Named presets (``paper``, ``default``, ``demo``) are built by :func:`preset` functions with
keyword overrides::

    TransferConfig.preset("paper", num_inference_steps=2)
    PipelineConfig.from_yaml("configs/cityscapes_to_acdc_night.yaml")

Validation errors are raised as :class:`ConfigError` (a ``ValueError``) naming the field, what
was expected and what was received. :func:`config_digest` is the one stable hash of an
effective config, used for caching and lineage.
"""

from __future__ import annotations

import contextvars
import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from zodi_core.model_source import is_local

T = TypeVar("T")

#: The paper's five target domains: built in, with a prompt phrase and a strength (SPEC §2).
#: Any other name is a user-defined domain, valid once a config or the prompt config gives it a
#: prompt (``TransferConfig.domain_settings`` / ``prompt``, ``PromptConfig.domains``).
DOMAINS = ("night", "snow", "rain", "fog", "game")
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


def _check_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"expected a non-empty value, received {value!r}")
    return value


#: A path, hub id, config name or URL: a string that is not empty or blank.
NonEmptyStr = Annotated[str, AfterValidator(_check_not_blank)]


def _check_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', received {value!r}")
    return value


#: A torch device of a stage (zodi_core.device.resolve_device): 'auto', 'cpu', 'cuda', 'cuda:N'.
Device = Annotated[str, AfterValidator(_check_device)]


def _check_not_empty(value: tuple) -> tuple:
    if not value:
        raise ValueError("expected at least one item, received none")
    return value


#: A list with at least one item (checked after its items, so a bad item is named alone).
NonEmptyTuple = Annotated[tuple[T, ...], AfterValidator(_check_not_empty)]
#: A seed that numpy and mmengine accept (``np.random.seed`` takes 0 <= seed < 2**32).
Seed32 = Annotated[int, Field(ge=0, lt=2**32)]
#: A name that becomes a file or folder name (a manifest name, a split folder).
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")]
PresetName = Literal["paper", "default", "demo"]

#: Text that follows "driving" in the prompt of each target domain (SPEC §2).
DOMAIN_PHRASES: dict[str, str] = {
    "night": "at night",
    "snow": "in snow",
    "rain": "under rain",
    "fog": "in fog",
    "game": "in a game",
}
#: Transfer strength of the authors' release per domain (SPEC §2).
DOMAIN_STRENGTHS: dict[str, float] = {
    "night": 0.90,
    "snow": 0.65,
    "rain": 0.65,
    "fog": 0.60,
    "game": 0.60,
}
#: Strength of a user-defined domain that sets none (the paper's snow and rain value).
USER_DOMAIN_STRENGTH = 0.65
SD15_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CONTROLNET_SEG_ID = "lllyasviel/control_v11p_sd15_seg"
CLIP_MODEL_ID = "openai/clip-vit-large-patch14"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names field, expectation and value.

    ``problems`` holds one line per problem (``train.max_iters: expected a value >= 1,
    received -5``): validation lists every bad field at once, not the first only.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]


#: pydantic's error types → what the field expects (its ``ctx`` fills the braces).
_EXPECTED = {
    "greater_than": "a value > {gt}",
    "greater_than_equal": "a value >= {ge}",
    "less_than": "a value < {lt}",
    "less_than_equal": "a value <= {le}",
    "too_short": "at least {min_length} item(s)",
    "too_long": "at most {max_length} item(s)",
    "string_too_short": "a non-empty string",
    "string_pattern_mismatch": "a name matching {pattern}",
    "literal_error": "one of {expected}",
    "multiple_of": "a multiple of {multiple_of}",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the config model at ``loc`` (for "did you mean"), [] if unknown."""
    import typing

    node: Any = model
    for part in loc[:-1]:
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return []
        field = node.model_fields.get(str(part))
        if field is None:
            continue  # a dict key or list index: the model is inside the annotation
        models = [
            a
            for a in _walk_annotation(field.annotation, typing)
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        node = models[0] if models else None
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _walk_annotation(annotation: Any, typing: Any) -> list[Any]:
    out = [annotation]
    for arg in typing.get_args(annotation):
        out += _walk_annotation(arg, typing)
    return out


def _problem_line(prefix: str, model: type[BaseModel], e: Any) -> str:
    loc = tuple(p for p in e["loc"] if not str(p).startswith("function-"))
    received = e.get("input")
    kind = e["type"]
    if loc[-1:] == ("[key]",):  # a mapping's key is invalid: name the mapping
        loc = loc[:-2]
    field = prefix + (".".join(str(p) for p in loc) or "<root>")
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(model, loc), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "check the spelling"
        return f"{field}: unknown key (received {received!r}); {hint}"
    if kind == "missing":
        return f"{field}: required, not set"
    if kind == "value_error":
        message = str(e["msg"]).removeprefix("Value error, ")
        if re.match(r"[a-z_][\w.]*: ", message):  # names its own field (a cross-field check)
            return f"{prefix}{message}" if loc == () else f"{field}.{message}"
        if "received" not in message and not isinstance(received, dict):
            message += f"; received {received!r}"
        return f"{field}: {message}"
    expected = _EXPECTED.get(kind)
    if expected is None:
        return f"{field}: {e['msg']} (received {received!r})"
    ctx = {k: _number(v) for k, v in e.get("ctx", {}).items()}
    return f"{field}: expected {expected.format(**ctx)}, received {received!r}"


def _number(value: Any) -> Any:
    """1.0 → 1 (a bound reads as written), other values unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _format_validation_error(model: type[BaseModel], err: ValidationError) -> ConfigError:
    """One ConfigError listing every problem of ``err``, each line naming its dotted field.

    A pipeline config's fields read as its YAML keys (``train.max_iters``); another model's
    with its class name (``TransferConfig.strength``).
    """
    prefix = "" if model.__name__ == "PipelineConfig" else f"{model.__name__}."
    problems = [_problem_line(prefix, model, e) for e in err.errors()]
    n = len(problems)
    head = "invalid configuration:" if n == 1 else f"invalid configuration ({n} problems):"
    return ConfigError(head + "\n  " + "\n  ".join(problems), problems)


_NESTING: contextvars.ContextVar[int] = contextvars.ContextVar("zodi_config_nesting", default=0)


class _Config(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    def __init__(self, **data: Any) -> None:
        # Nested models are validated inside the outer one: only the outermost call converts
        # pydantic's error into one ConfigError, so nested fields read "Outer.inner.field".
        token = _NESTING.set(_NESTING.get() + 1)
        try:
            super().__init__(**data)
        except ValidationError as err:
            if _NESTING.get() > 1:
                raise
            raise _format_validation_error(type(self), err) from None
        finally:
            _NESTING.reset(token)

    def replace(self, **overrides: Any) -> Self:
        """A copy with ``overrides`` applied and validated again."""
        return type(self)(**{**self.model_dump(), **overrides})

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> Self:
        """The named preset (``paper``, ``default``, ``demo``) with ``overrides`` applied."""
        presets = cls._presets()
        if name not in presets:
            raise ConfigError(
                f"{cls.__name__}.preset: expected one of {sorted(presets)}, received {name!r}"
            )
        return cls(**{**presets[name], **overrides})

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        return {"paper": {}, "default": {}, "demo": {}}


class ModelsConfig(_Config):
    """Where the diffusion components come from."""

    base: NonEmptyStr = Field(
        SD15_MODEL_ID, description="Hub id or local folder of Stable Diffusion 1.5"
    )
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


def _check_strength_value(v: float | None) -> float | None:
    if v is not None and not 0.0 < v <= 1.0:
        raise ValueError(f"expected a strength in (0, 1], received {v}")
    return v


def _check_prompt_values(prompt: str | None, prompts: tuple[str, ...]) -> None:
    if prompt is not None and not prompt.strip():
        raise ValueError("prompt: expected a non-empty prompt, received an empty string")
    if any(not p.strip() for p in prompts):
        raise ValueError(f"prompts: expected non-empty prompts, received {list(prompts)!r}")
    if prompt is not None and prompts:
        raise ValueError("prompt, prompts: set one of them, not both")


def choose_prompt(prompts: tuple[str, ...] | list[str], seed: int) -> str:
    """The prompt of one image: ``prompts[seed mod len(prompts)]`` of its per-image seed.

    Deterministic (same seed, same prompt) and independent of batching; with one prompt, it.
    """
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, received none")
    return prompts[int(seed) % len(prompts)]


class DomainSettings(_Config):
    """One domain's prompt settings; a field left None keeps the transfer config's value."""

    prompt: str | None = Field(None, description="The domain's prompt")
    prompts: tuple[str, ...] | None = Field(
        None, description="Several prompts; each image picks one from its per-image seed"
    )
    negative_prompt: str | None = Field(None, description="CFG negative prompt")
    strength: float | None = Field(None, description="S in (0, 1]")
    seed_offset: int | None = Field(
        None, ge=0, lt=2**32, description="Added to the global seed for this domain"
    )

    @field_validator("strength")
    @classmethod
    def _check_strength(cls, v: float | None) -> float | None:
        return _check_strength_value(v)

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected a non-empty prompt, received an empty string")
        return v

    @field_validator("prompts")
    @classmethod
    def _check_prompts(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or any(not p.strip() for p in v)):
            raise ValueError(f"expected one or more non-empty prompts, received {list(v)!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_prompt_values(self.prompt, self.prompts or ())
        return self

    def overrides(self) -> dict[str, Any]:
        """The fields set here as TransferConfig overrides (a prompt replaces prompts)."""
        out = self.model_dump(exclude_none=True)
        if "prompt" in out:
            out["prompts"] = ()
        elif "prompts" in out:
            out["prompt"] = None
        return out


#: TransferConfig fields that change speed, not the generated pixels (up to float rounding):
#: left out of the generation digest (zodi_core.transfer.sampler.transfer_digest), so switching
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
    prompt: str | None = Field(None, description="Prompt; None: 'driving <domain phrase>'+suffix")
    prompts: tuple[str, ...] = Field(
        (),
        description="Several prompts (instead of prompt); each image picks one from its "
        "per-image seed (seed mod count) and its manifest row records which; with "
        "seed_policy 'global' (the paper preset) every image has one seed, hence one prompt",
    )
    prompt_suffix: str = Field(", best quality", description="Appended to the derived prompt")
    negative_prompt: str = Field("lower quality, worst quality", description="CFG negative prompt")
    strength: float | None = Field(None, description="S in (0, 1]; None: the domain's default")
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
    batch_size: int = Field(
        4, ge=1, description="Images per sampler call (speed lever, not in the digest)"
    )
    device: Device = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Weights and activations; changes pixels, so in the digest. "
        "'auto': float16 on CUDA, float32 on CPU",
    )
    compile: bool = Field(
        False,
        description="Speed lever, not in the digest: torch.compile the UNet and ControlNet with "
        "static shapes (dynamic=False; a tail chunk is padded to batch_size)",
    )
    channels_last: bool = Field(
        False,
        description="Speed lever, not in the digest: NHWC memory format for UNet, ControlNet "
        "and VAE (off until a GPU figure shows a gain: docs/benchmarks.md)",
    )
    sdpa_backend: Literal["auto", "math", "flash", "efficient", "cudnn"] = Field(
        "auto",
        description="Speed lever, not in the digest: attention kernel "
        "(torch.nn.attention.sdpa_kernel); 'auto': torch's choice",
    )
    cudnn_benchmark: bool = Field(
        True,
        description="Speed lever, not in the digest: cuDNN autotunes convolutions per shape (CUDA)",
    )
    tf32: bool = Field(
        True,
        description="Speed lever, not in the digest: TF32 tensor cores for float32 matmuls and "
        "convolutions (CUDA with dtype float32; float rounding only)",
    )
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Model sources")

    @field_validator("strength")
    @classmethod
    def _check_strength(cls, v: float | None) -> float | None:
        return _check_strength_value(v)

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected a non-empty prompt, received an empty string")
        return v

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.short_side % self.size_multiple:
            raise ValueError(
                f"short_side: expected a multiple of size_multiple={self.size_multiple}, "
                f"received {self.short_side}"
            )
        _check_prompt_values(self.prompt, self.prompts)
        offsets = [s.seed_offset or 0 for s in self.domain_settings.values()]
        if self.seed + self.seed_offset + max(offsets, default=0) >= 2**62:
            raise ValueError(
                f"seed: expected seed + seed offsets < 2**62 (the resolved seed), received "
                f"{self.seed} + {self.seed_offset} + {max(offsets, default=0)}"
            )
        if not self._has_prompt() and self.domain not in DOMAIN_PHRASES:
            raise ValueError(
                f"domain: {self.domain!r} has no prompt; give it one (transfer.prompt, "
                f"transfer.domain_settings.{self.domain}.prompt, or the prompt config's "
                f"domains.{self.domain}.prompt) or use a built-in domain ({', '.join(DOMAINS)})"
            )
        return self

    def _has_prompt(self) -> bool:
        r = self._effective()
        return r["prompt"] is not None or bool(r["prompts"])

    def _effective(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "prompt": self.prompt,
            "prompts": self.prompts,
            "negative_prompt": self.negative_prompt,
            "strength": self.strength,
            "seed_offset": self.seed_offset,
        }
        settings = self.domain_settings.get(self.domain)
        if settings is not None:
            values.update(settings.overrides())
        return values

    def resolved(self) -> TransferConfig:
        """This config with ``domain_settings[domain]`` folded into the plain fields, the seed
        offset into ``seed`` and the other domains' settings dropped (idempotent): what the
        sampler uses and what the generation digest covers."""
        if not self.domain_settings and not self.seed_offset:
            return self
        r = self._effective()
        return self.replace(
            prompt=r["prompt"],
            prompts=r["prompts"],
            negative_prompt=r["negative_prompt"],
            strength=r["strength"],
            seed=self.seed + r["seed_offset"],
            seed_offset=0,
            domain_settings={},
        )

    @property
    def effective_prompts(self) -> tuple[str, ...]:
        """The domain's prompts: several, one, or the built-in 'driving <phrase>'+suffix."""
        r = self._effective()
        if r["prompts"]:
            return tuple(r["prompts"])
        return (r["prompt"] or f"driving {DOMAIN_PHRASES[self.domain]}{self.prompt_suffix}",)

    @property
    def effective_prompt(self) -> str:
        """The prompt, or the first of several (each image's: :meth:`prompt_for`)."""
        return self.effective_prompts[0]

    def prompt_for(self, seed: int) -> str:
        """The prompt of the image whose per-image seed is ``seed`` (:func:`choose_prompt`)."""
        return choose_prompt(self.effective_prompts, seed)

    @property
    def effective_negative_prompt(self) -> str:
        return self._effective()["negative_prompt"]

    @property
    def effective_strength(self) -> float:
        strength = self._effective()["strength"]
        if strength is not None:
            return strength
        return DOMAIN_STRENGTHS.get(self.domain, USER_DOMAIN_STRENGTH)

    @property
    def effective_seed(self) -> int:
        """``seed`` plus the domain's seed offset."""
        return self.seed + self._effective()["seed_offset"]

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        return {
            "paper": {
                "palette": "cityscapes",
                "timestep_mode": "release",
                "seed_policy": "global",
                "batch_size": 1,
            },
            "default": {},
            "demo": {
                "num_inference_steps": 4,
                "short_side": 64,
                "size_multiple": 64,
                "batch_size": 4,
                "device": "cpu",
                "guidance_scale": 3.0,
            },
        }


class TrainConfig(_Config):
    """Model adaptation (SPEC §3): the one owner of ZoDi's settings (scheme, λ, feature stage).

    ``mmseg_config`` is a plain segmentation config; ZoDi (the ``ZoDiSegmentor`` wrapper, the
    paired dataset and pipeline) is added to it in code from this config's fields, and the
    source-only baseline trains the same config without it.
    """

    mmseg_config: NonEmptyStr = Field(
        "deeplabv3plus_r50-release_4xb-100e_cityscapes-512x1024.py",
        description="mmseg config of the segmentation model: a path, a name under "
        "zodi_core/seg/configs, or an mmseg model-zoo name (mmseg::<folder>/<file>.py)",
    )
    scheme: Literal["release", "concat"] = Field(
        "release",
        description="'release': L_sim+CE(src) then a second forward for CE(gen); 'concat': one "
        "forward of the concatenated pair (differs in BatchNorm statistics; the scheme under DDP)",
    )
    lambda_sim: float = Field(0.1, ge=0.0, description="Weight λ of the similarity loss")
    feature_stage: int = Field(
        -1, ge=-8, le=7,
        description="Backbone stage whose pooled features L_sim uses (-1: the last; the "
        "backbone's stage count is checked when the model runs)",
    )  # fmt: skip
    seeds: NonEmptyTuple[Seed32] = Field((0,), description="Training seeds (paper: three)")
    max_epochs: int | None = Field(None, ge=1, description="Override the config's epochs")
    max_iters: int | None = Field(None, ge=1, description="Override with an iteration budget")
    batch_size: int | None = Field(None, ge=1, description="Override the config's batch size")
    pretrained: NonEmptyStr | None = Field(
        None, description="Local path of ImageNet backbone weights"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="mmengine console log level; None: the mmseg config's"
    )
    device: Device = Field(
        "auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="'auto'/'float32': full precision; float16/bfloat16: AMP on CUDA"
    )
    vis_backends: tuple[Literal["local", "tensorboard", "mlflow"], ...] = Field(
        ("local",), description="mmengine visualisation backends (local: <work_dir>/*/vis_data)"
    )

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        return {
            "paper": {"seeds": (0, 1, 2)},
            "default": {},
            "demo": {
                "mmseg_config": "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py",
                "log_level": "WARNING",
            },
        }


class EvalConfig(_Config):
    """Evaluation (SPEC §4)."""

    height: int = Field(
        512, ge=8, le=16384, description="Images and labels are resized to this height"
    )
    width: int = Field(
        1024, ge=8, le=16384, description="Images and labels are resized to this width"
    )
    proxy: bool = Field(True, description="Also evaluate on generated images of the source val")
    batch_size: int = Field(1, ge=1, description="Images per forward pass")
    device: Device = Field(
        "auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="'auto'/'float32': full precision; float16/bfloat16: autocast on CUDA"
    )

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        return {"paper": {}, "default": {}, "demo": {"height": 64, "width": 128}}


class StorageConfig(_Config):
    """Where artifacts go: a local folder or ``s3://bucket/prefix``."""

    root: str = Field("./zodi-demo/artifacts", description="Local folder or s3://bucket/prefix")
    endpoint_url: str | None = Field(
        None, pattern=r"^https?://[^\s/]+", description="S3-compatible endpoint (None: AWS)"
    )
    region: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="S3 region (None: from the AWS config chain)",
    )  # fmt: skip

    @field_validator("root")
    @classmethod
    def _check_root(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expected a folder or s3://bucket/prefix, received an empty string")
        if v.startswith("s3://") and len(v) <= len("s3://"):
            raise ValueError(f"expected s3://bucket[/prefix], received {v!r}")
        return v

    def storage_options(self) -> dict[str, str]:
        """The S3 options set here, for ``storage.open_storage(root, **options)`` or
        ``storage.use_options(**options)``; unset ones are left to boto3's configuration."""
        return {
            k: v for k, v in (("endpoint_url", self.endpoint_url), ("region", self.region)) if v
        }


class ReportConfig(_Config):
    """How the report's Prefect artifacts show images (sample grids, confusion matrices)."""

    images: Literal["auto", "presigned", "embedded"] = Field(
        "auto",
        description="auto: presigned links for S3 roots, embedded for local ones; presigned: "
        "links only (a local root then shows paths); embedded: images inline as data URIs",
    )
    presign_expires_s: int = Field(
        7 * 24 * 3600, ge=1, le=7 * 24 * 3600,
        description="Life of a presigned image link in seconds (7 days, the S3 maximum)",
    )  # fmt: skip
    embed_max_kb: int = Field(
        200, ge=16,
        description="Size budget of the images embedded in one artifact, in kB of data URI "
        "(Prefect keeps artifacts in its database); images are downscaled and JPEG-compressed "
        "to fit, or linked when they cannot",
    )  # fmt: skip


#: The weather conditions of ACDC's folders (``rgb_anon/<condition>/...``).
ACDC_CONDITIONS = ("night", "snow", "rain", "fog")


class DatasetSpec(_Config):
    """One dataset to ingest."""

    dataset: Literal["cityscapes", "acdc", "gta5"] = Field(..., description="On-disk layout")
    root: NonEmptyStr = Field(..., description="Dataset root folder")
    split: FileName = Field("train", description="Split folder (cityscapes, acdc)")
    condition: Literal["night", "snow", "rain", "fog"] | None = Field(
        None, description="ACDC condition"
    )
    subset: int | None = Field(None, ge=1, description="Random subset of this size (GTA5: 1000)")
    subset_seed: Seed32 = Field(0, description="Seed of the random subset")
    name: FileName | None = Field(
        None, description="Report and manifest name (manifests/<name>.parquet); None: derived"
    )
    domain: DomainName | None = Field(
        None,
        description="Target domain this real set evaluates (pairs it with that domain's proxy); "
        "None: the ACDC condition, 'game' for gta5, no domain for cityscapes",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.dataset == "acdc" and self.condition not in ACDC_CONDITIONS:
            raise ValueError(
                f"condition: expected one of {', '.join(ACDC_CONDITIONS)} for acdc, "
                f"received {self.condition!r}"
            )
        return self

    @property
    def target_domain(self) -> str | None:
        """The domain this set evaluates: ``domain``, else derived from the dataset."""
        if self.domain is not None:
            return self.domain
        if self.dataset == "acdc":
            return self.condition
        if self.dataset == "gta5":
            return "game"
        return None

    @property
    def manifest_name(self) -> str:
        """Name of this dataset's samples manifest (``manifests/<name>.parquet``)."""
        if self.name:
            return self.name
        if self.dataset == "acdc":
            return f"acdc-{self.condition}-{self.split}"
        if self.dataset == "gta5":
            return "gta5"
        return f"{self.dataset}-{self.split}"


class QualityConfig(_Config):
    """Scores of the generated images and the training filter (zodi_core.quality, issue 14)."""

    score: bool = Field(True, description="Score every generated image before ZoDi trains")
    seg_config: NonEmptyStr | None = Field(
        None, description="Layout scorer's mmseg config; None: train's"
    )
    seg_checkpoint: NonEmptyStr | None = Field(
        None, description="Layout scorer checkpoint; None: the run's source-only model"
    )
    clip: NonEmptyStr | None = Field(
        CLIP_MODEL_ID, description="CLIP hub id or folder; None: no CLIP"
    )
    min_layout_miou: float | None = Field(
        None, ge=0.0, le=100.0, description="Drop rows below this layout mIoU (%)"
    )
    min_clip: float | None = Field(
        None, ge=-1.0, le=1.0, description="Drop rows below this CLIP score (cosine)"
    )
    drop_lowest_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Also drop this fraction with the lowest layout mIoU"
    )
    batch_size: int = Field(8, ge=1, description="Images per scoring batch")
    device: Device = Field(
        "auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'"
    )
    worst_n: int = Field(8, ge=0, description="Rows of the report's worst-generations grid")

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        # demo: no CLIP download on a machine without network (the demo may pass a tiny one)
        return {"paper": {}, "default": {}, "demo": {"clip": None, "worst_n": 4}}


class PipelineConfig(_Config):
    """The whole pipeline: ingest → shard → transfer → merge → train → evaluate → report."""

    source: DatasetSpec = Field(
        default_factory=lambda: DatasetSpec(dataset="cityscapes", root="data/cityscapes"),
        description="Labelled source training set",
    )
    source_val: DatasetSpec | None = Field(None, description="Source val split (proxy evaluation)")
    targets: tuple[DatasetSpec, ...] = Field((), description="Real target sets to evaluate on")
    domains: NonEmptyTuple[DomainName] = Field(
        ("night",),
        description="Target domains to transfer to: built-in ones or names that transfer."
        "domain_settings (or transfer.prompt) gives a prompt",
    )
    transfer: TransferConfig = Field(default_factory=TransferConfig, description="Transfer")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Adaptation")
    evaluation: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Artifacts")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality control")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Report artifacts")
    shard_size: int = Field(8, ge=1, description="Source images per transfer shard")

    @model_validator(mode="after")
    def _check_domains(self) -> Self:
        # Every domain must have a prompt: a built-in one, or one set in transfer.
        t = self.transfer
        for domain in self.domains:
            own = t.domain_settings.get(domain)
            has_prompt = t.prompt is not None or bool(t.prompts)
            has_prompt = has_prompt or (own is not None and bool(own.prompt or own.prompts))
            if domain not in DOMAIN_PHRASES and not has_prompt:
                raise ValueError(
                    f"domains: {domain!r} has no prompt; define it under "
                    f"transfer.domain_settings.{domain}.prompt (or prompts) or use a built-in "
                    f"domain ({', '.join(DOMAINS)})"
                )
        return self

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> Self:
        if name not in ("paper", "default", "demo"):
            raise ConfigError(
                f"PipelineConfig.preset: expected one of ['default', 'demo', 'paper'], "
                f"received {name!r}"
            )
        base = {
            "transfer": TransferConfig.preset(name).model_dump(),
            "train": TrainConfig.preset(name).model_dump(),
            "evaluation": EvalConfig.preset(name).model_dump(),
            "quality": QualityConfig.preset(name).model_dump(),
        }
        if name == "demo":
            base["shard_size"] = 4
        return cls(**_deep_merge(base, overrides))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Self:
        """Load YAML; a top-level ``preset:`` key selects the base preset (default ``default``)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {path}: expected a mapping, received {type(data).__name__}"
            )
        name = data.pop("preset", "default")
        # The file's relative paths name files next to it; the caller's overrides (command-line
        # options) name files relative to the current folder.
        config = cls.preset(name, **data).resolve_paths(path.parent)
        if overrides:
            config = cls(**_deep_merge(config.model_dump(), overrides)).resolve_paths(Path.cwd())
        return config

    def resolve_paths(self, base: str | Path) -> Self:
        """This config with every relative local path made absolute against ``base``.

        The one rule for relative paths (``zodi pipeline --config`` and ``zodi submit --config``
        both load through :meth:`from_yaml`, which passes the config file's folder): dataset
        roots, ``storage.root``, ``train.pretrained`` and ``quality.seg_checkpoint`` are local
        paths unless they are URIs (``s3://...``); model sources (``transfer.models.*``,
        ``quality.clip``) and mmseg configs (``train.mmseg_config``, ``quality.seg_config``) are
        local paths only when they start with ``.``, ``/`` or ``~`` or exist under ``base`` —
        otherwise they stay hub ids, bundled config names or ``mmseg::`` model-zoo names.
        """
        base = Path(base).expanduser().absolute()

        def spec(s: DatasetSpec | None) -> DatasetSpec | None:
            return s if s is None else s.replace(root=_local_path(s.root, base))

        t, q = self.transfer, self.quality
        models = t.models.replace(
            base=_local_source(t.models.base, base),
            controlnet=_local_source(t.models.controlnet, base),
        )
        train = self.train.replace(
            mmseg_config=_local_source(self.train.mmseg_config, base, mmseg=True),
            pretrained=_local_path(self.train.pretrained, base),
        )
        quality = q.replace(
            seg_config=_local_source(q.seg_config, base, mmseg=True),
            seg_checkpoint=_local_path(q.seg_checkpoint, base),
            clip=_local_source(q.clip, base),
        )
        return self.replace(
            source=spec(self.source),
            source_val=spec(self.source_val),
            targets=tuple(spec(s) for s in self.targets),
            transfer=t.replace(models=models),
            train=train,
            quality=quality,
            storage=self.storage.replace(root=_local_path(self.storage.root, base)),
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _local_path(value: str | None, base: Path) -> str | None:
    """``value`` made absolute against ``base`` (``~`` expanded); a URI is left as it is."""
    if value is None or "://" in value:
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def _local_source(value: str | None, base: Path, mmseg: bool = False) -> str | None:
    """A model or mmseg config source: a local path made absolute, else left as it is.

    Local by :func:`zodi_core.model_source.is_local` (starts with ``.``, ``/`` or ``~``, or
    names something under ``base``); otherwise it is a hub id (``org/name``), a bundled mmseg
    config name or an ``mmseg::`` model-zoo name.
    """
    if value is None or "://" in value or (mmseg and value.startswith("mmseg::")):
        return value
    return _local_path(value, base) if is_local(value, base) else value


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_digest(config: BaseModel | dict[str, Any], length: int = 16) -> str:
    """Stable hex digest of an effective config (canonical JSON, sorted keys)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
