"""Versioned prompt configuration per target domain, and which domains changed since generation.

The YAML format (file, ``s3://`` object or Prefect Variable) is documented in docs/deployment.md;
a field left out keeps the transfer config's value (SPEC §2 defaults for the paper's domains)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from zodi_core import layout, manifest, storage
from zodi_core.config import ConfigError, DomainSettings, TransferConfig, config_digest
from zodi_core.config.base import _Config, read_yaml_mapping
from zodi_core.config.transfer import DomainName, check_prompt, choose_prompt
from zodi_core.transfer.sampler import sample_seed

#: Strength is stored as float32 in the manifest; compare at this many decimals.
STRENGTH_DECIMALS = 4


class PromptConfig(_Config):
    """The versioned prompt config: a version label and per-domain prompt settings."""

    version: str = Field("0", description="Version label, echoed in regeneration reports")
    domains: dict[DomainName, DomainSettings] = Field(
        default_factory=dict, description="Per-domain settings; domains not listed keep defaults"
    )

    @model_validator(mode="after")
    def _check_domains(self) -> PromptConfig:
        for domain, entry in self.domains.items():  # a user domain needs a prompt here
            check_prompt(f"domains.{domain}: domain", domain, entry)
        return self

    @classmethod
    def from_text(cls, text: Any, source: str = "<text>") -> PromptConfig:
        """Parse YAML (or JSON) text, or take the mapping itself (a Prefect Variable holds
        either); errors name ``source``."""
        where, expected = f"prompt config {source}", "a mapping with 'version' and 'domains'"
        data = text if isinstance(text, dict) else read_yaml_mapping(str(text), where, expected)
        try:
            return cls(**{**data, "version": str(data.get("version", "0"))})
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None

    def transfer_config(self, base: TransferConfig, domain: str) -> TransferConfig:
        """``base`` for ``domain`` with this config's prompt settings applied (validated): they
        override ``base.domain_settings[domain]`` field by field (a prompt replaces prompts)."""
        settings = dict(base.domain_settings)
        if domain in self.domains:
            own = self.domains[domain].model_dump(exclude_none=True)
            if own.keys() & {"prompt", "prompts"}:
                own = {"prompt": None, "prompts": None} | own
            settings[domain] = settings.get(domain, DomainSettings()).replace(**own)
        return base.replace(domain=domain, domain_settings=settings)


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

    def matches_row(self, row: dict[str, Any]) -> bool:
        """Whether a manifest row (its prompt, negative prompt, strength, seed) is what these
        settings generate: with several prompts, the one its seed picks."""
        wanted = choose_prompt(self.prompts, row["seed"]) if self.prompts else self.prompt
        got = (row["prompt"], row["negative_prompt"], _rounded(row["strength"]))
        return got == (wanted, self.negative_prompt, _rounded(self.strength))

    def to_dict(self) -> dict[str, Any]:
        """The values (strength rounded; ``prompts`` only when several)."""
        out = {"prompt": self.prompt, "negative_prompt": self.negative_prompt}
        out["strength"] = _rounded(self.strength)
        return out | ({"prompts": list(self.prompts)} if self.prompts else {})

    def digest(self) -> str:
        """16 hex chars over the canonical JSON of :meth:`to_dict`."""
        return config_digest(self.to_dict())


def _rounded(strength: float) -> float:
    return round(float(strength), STRENGTH_DECIMALS)


@dataclass(frozen=True)
class DomainPromptStatus:
    """The comparison of one domain: the wanted settings against the recorded ones."""

    domain: str
    status: Literal["unchanged", "changed", "missing"]
    wanted: PromptValues
    wanted_digest: str
    recorded: tuple[PromptValues, ...]
    recorded_digests: tuple[str, ...]
    paired_uri: str
    #: Rows generated with another seed than the wanted one (changed seed or seed offset).
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
        return asdict(self) | {"needs_regeneration": self.needs_regeneration}


def compare_domain(
    prompts: PromptConfig, base: TransferConfig, domain: str, root: str
) -> DomainPromptStatus:
    """Compare ``domain``'s wanted prompt settings with its paired manifest under ``root``.

    More than one recorded setting (a domain generated piecemeal) or a row with another seed than
    the wanted one (changed seed or seed offset) counts as changed.
    """
    config = prompts.transfer_config(base, domain)
    several = config.effective_prompts
    wanted = PromptValues(
        several[0],
        config.effective_negative_prompt,
        config.effective_strength,
        several if len(several) > 1 else (),
    )
    uri = layout.paired_manifest_uri(root, domain)
    cols = ["sample_id", "prompt", "negative_prompt", "strength", "seed"]
    exists = storage.exists(uri)
    rows = manifest.read_manifest(uri, "transfer").select(cols).to_pylist() if exists else []
    seen = {(r["prompt"], r["negative_prompt"], _rounded(r["strength"])) for r in rows}
    recorded = tuple(PromptValues(*v) for v in sorted(seen))
    digests = tuple(r.digest() for r in recorded)
    seed, policy = config.effective_seed, config.seed_policy
    seeds_changed = sum(r["seed"] != sample_seed(seed, r["sample_id"], policy) for r in rows)
    same = all(map(wanted.matches_row, rows)) if wanted.prompts else digests == (wanted.digest(),)
    status = "missing" if not rows else "changed" if seeds_changed or not same else "unchanged"
    return DomainPromptStatus(
        domain, status, wanted, wanted.digest(), recorded, digests, uri, seeds_changed
    )


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
