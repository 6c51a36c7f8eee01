"""Versioned prompt configuration per target domain, and which domains changed since generation.

A prompt config is a small YAML document, kept in storage (a file or ``s3://`` object) or in a
Prefect Variable (read by ``flows/regenerate.py``; this module never imports Prefect)::

    version: 3                  # free-form; bump it on every edit, it is echoed in reports
    domains:
      night:
        prompt: "driving at night, best quality"
        strength: 0.9
      fog:
        prompt: "driving in dense fog, best quality"
        negative_prompt: "lower quality, worst quality"
      dusk:                     # a user-defined domain: any name with a prompt
        prompts: ["driving at dusk, best quality", "driving at sunset, best quality"]
        strength: 0.7
        seed_offset: 1000

A field left out keeps the transfer config's value (for the prompt and strength of the paper's
five domains: their defaults, SPEC §2); a domain other than those five needs a prompt (or
prompts). ``prompts`` lists several: each image picks one from its per-image seed
(:func:`zodi_core.config.choose_prompt`) and its manifest row records which. Domain names:
:data:`zodi_core.config.DOMAIN_NAME_RULE`. The *effective* values — prompt, negative prompt, strength — are what the
sampler sees and what each row of a paired manifest records, so both sides are compared on those:
:func:`compare_prompts` digests the wanted values and the values recorded in each domain's
paired manifest and says, per domain, ``unchanged``, ``changed`` or ``missing``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from zodi_core import layout, manifest, storage
from zodi_core.config import (
    ConfigError,
    DomainName,
    DomainSettings,
    TransferConfig,
    _Config,
    choose_prompt,
)

#: Strength is stored as float32 in the manifest; compare at this many decimals.
STRENGTH_DECIMALS = 4

Status = Literal["unchanged", "changed", "missing"]


#: Prompt settings of one domain (prompt or prompts, negative prompt, strength, seed offset);
#: ``None`` keeps the transfer config's value.
DomainPrompt = DomainSettings


class PromptConfig(_Config):
    """The versioned prompt config: a version label and per-domain prompt settings."""

    version: str = Field("0", description="Version label, echoed in regeneration reports")
    domains: dict[DomainName, DomainPrompt] = Field(
        default_factory=dict, description="Per-domain settings; domains not listed keep defaults"
    )

    @model_validator(mode="after")
    def _check_domains(self) -> PromptConfig:
        # TransferConfig holds the rules (non-empty prompt, strength in (0, 1]): apply them.
        for domain, entry in self.domains.items():
            try:
                TransferConfig(domain=domain, domain_settings={domain: entry})
            except ValidationError as err:  # nested in this model's validation: pydantic's own
                e = err.errors()[0]
                field = ".".join(str(p) for p in e["loc"])
                where = f"domains.{domain}.{field}" if field else f"domains.{domain}"
                raise ValueError(f"{where}: {e['msg'].removeprefix('Value error, ')}") from None
        return self

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> PromptConfig:
        """Parse YAML (or JSON) text; errors name ``source``."""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"prompt config {source}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"prompt config {source}: expected a mapping with 'version' and 'domains', "
                f"received {type(data).__name__}"
            )
        if "version" in data:
            data["version"] = str(data["version"])
        try:
            return cls(**data)
        except ConfigError as err:
            raise ConfigError(f"prompt config {source}: {err}") from None

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=True)

    def transfer_config(self, base: TransferConfig, domain: str) -> TransferConfig:
        """``base`` for ``domain`` with this config's prompt settings applied (validated): they
        override ``base.domain_settings[domain]`` field by field (a prompt replaces prompts)."""
        entry = self.domains.get(domain)
        settings = dict(base.domain_settings)
        if entry is not None:
            own = entry.model_dump(exclude_none=True)
            old = settings.get(domain)
            merged = old.model_dump(exclude_none=True) if old is not None else {}
            if "prompt" in own or "prompts" in own:
                merged.pop("prompt", None)
                merged.pop("prompts", None)
            settings[domain] = DomainSettings(**{**merged, **own})
        return base.replace(domain=domain, domain_settings=settings)


def prompt_config_from_value(value: Any, source: str) -> PromptConfig:
    """A prompt config from a stored value: YAML/JSON text, or the mapping itself (a Prefect
    Variable holds either); errors name ``source``."""
    if isinstance(value, dict):
        try:
            return PromptConfig(**{**value, "version": str(value.get("version", "0"))})
        except ConfigError as err:
            raise ConfigError(f"prompt config {source}: {err}") from None
    return PromptConfig.from_text(str(value), source=source)


def load_prompt_config(uri: str, **storage_options: Any) -> PromptConfig:
    """Read a prompt config from a local path or ``s3://`` URI."""
    try:
        data = storage.read_bytes(uri, **storage_options)
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt_config_uri: no prompt config at {uri!r}") from None
    return PromptConfig.from_text(data.decode(), source=uri)


@dataclass(frozen=True)
class PromptValues:
    """The effective prompt settings of one domain, as the sampler uses and manifests record."""

    prompt: str
    negative_prompt: str
    strength: float
    #: Several prompts (each image picks one from its seed); empty for one prompt.
    prompts: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: TransferConfig) -> PromptValues:
        prompts = config.effective_prompts
        return cls(
            prompts[0],
            config.effective_negative_prompt,
            config.effective_strength,
            prompts if len(prompts) > 1 else (),
        )

    def matches_row(self, prompt: str, negative_prompt: str, strength: float, seed: int) -> bool:
        """Whether a manifest row (its prompt, negative prompt, strength, seed) is what these
        settings generate: with several prompts, the one its seed picks."""
        wanted = choose_prompt(self.prompts, seed) if self.prompts else self.prompt
        return (
            prompt == wanted
            and negative_prompt == self.negative_prompt
            and round(float(strength), STRENGTH_DECIMALS)
            == round(float(self.strength), STRENGTH_DECIMALS)
        )

    def digest(self) -> str:
        """16 hex chars over the canonical JSON of the values (strength rounded; ``prompts``
        only when several)."""
        data: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "strength": round(float(self.strength), STRENGTH_DECIMALS),
        }
        if self.prompts:
            data["prompts"] = list(self.prompts)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def recorded_prompts(paired_uri: str) -> list[PromptValues] | None:
    """The distinct prompt settings recorded in a paired manifest; None when it does not exist.

    A single-prompt domain's manifest written by one run holds exactly one; more than one means
    the domain was generated piecemeal with different prompts, which counts as changed. A
    multi-prompt domain holds one per prompt used (compared row by row).
    """
    if not storage.exists(paired_uri):
        return None
    table = manifest.read_manifest(paired_uri, "transfer")
    cols = [table.column(c).to_pylist() for c in ("prompt", "negative_prompt", "strength")]
    seen = {(p, n, round(float(s), STRENGTH_DECIMALS)) for p, n, s in zip(*cols, strict=True)}
    return [PromptValues(p, n, s) for p, n, s in sorted(seen)]


@dataclass(frozen=True)
class DomainPromptStatus:
    """The comparison of one domain: the wanted settings against the recorded ones."""

    domain: str
    status: Status
    wanted: PromptValues
    wanted_digest: str
    recorded: tuple[PromptValues, ...]
    recorded_digests: tuple[str, ...]
    paired_uri: str
    #: Rows whose seed is not the one the wanted settings give their image (a changed seed or
    #: seed offset): 0 when the prompt settings alone decide the status.
    seeds_changed: int = 0

    @property
    def needs_regeneration(self) -> bool:
        return self.status != "unchanged"

    def line(self) -> str:
        if self.status == "missing":
            return f"{self.domain}: missing (no paired manifest at {self.paired_uri})"
        if self.status == "unchanged":
            return f"{self.domain}: unchanged ({self.wanted_digest})"
        if self.seeds_changed:
            return (
                f"{self.domain}: changed seeds ({self.seeds_changed} images were generated with "
                "another seed or seed offset)"
            )
        old = ", ".join(f"{r.prompt!r} S={r.strength}" for r in self.recorded)
        return (
            f"{self.domain}: changed {','.join(self.recorded_digests)} → {self.wanted_digest} "
            f"(was {old}; now {self.wanted.prompt!r} S={self.wanted.strength})"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["needs_regeneration"] = self.needs_regeneration
        return out


def compare_domain(
    prompts: PromptConfig, base: TransferConfig, domain: str, root: str
) -> DomainPromptStatus:
    """Compare ``domain``'s wanted prompt settings with its paired manifest under ``root``."""
    config = prompts.transfer_config(base, domain)
    wanted = PromptValues.of(config)
    uri = layout.paired_manifest_uri(root, domain)
    recorded = recorded_prompts(uri)
    digests = tuple(r.digest() for r in recorded or [])
    seeds_changed = 0
    if recorded is None or not recorded:
        status: Status = "missing"
    else:
        table = manifest.read_manifest(uri, "transfer")
        if wanted.prompts:  # several prompts: each row must hold the one its seed picks
            cols = ("prompt", "negative_prompt", "strength", "seed")
            rows = zip(*(table.column(c).to_pylist() for c in cols), strict=True)
            same = all(wanted.matches_row(*r) for r in rows)
        else:
            same = digests == (wanted.digest(),)
        seeds_changed = _rows_with_other_seeds(table, config)
        status = "unchanged" if same and not seeds_changed else "changed"
    return DomainPromptStatus(
        domain=domain,
        status=status,
        wanted=wanted,
        wanted_digest=wanted.digest(),
        recorded=tuple(recorded or ()),
        recorded_digests=digests,
        paired_uri=uri,
        seeds_changed=seeds_changed,
    )


def _rows_with_other_seeds(table: Any, config: TransferConfig) -> int:
    """How many rows of a paired manifest hold another seed than ``config`` gives their image
    (its effective seed, the domain's offset included, and seed policy)."""
    from zodi_core.transfer.sampler import sample_seed

    seed, policy = config.effective_seed, config.seed_policy
    ids, seeds = table.column("sample_id").to_pylist(), table.column("seed").to_pylist()
    return sum(s != sample_seed(seed, sid, policy) for sid, s in zip(ids, seeds, strict=True))


def compare_prompts(
    prompts: PromptConfig, base: TransferConfig, domains: list[str] | None, root: str
) -> list[DomainPromptStatus]:
    """Compare every domain in ``domains`` (None: those listed in the prompt config)."""
    names = list(domains) if domains is not None else sorted(prompts.domains)
    if not names:
        raise ValueError(
            "domains: expected at least one domain (given, or listed in the prompt config), "
            "received none"
        )
    return [compare_domain(prompts, base, d, root) for d in names]
