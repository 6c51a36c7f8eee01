"""Regeneration when prompts change (plain logic for ``flows/regenerate.py``): plan, report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zodi_core import layout, manifest, storage
from zodi_core.config import DOMAIN_PHRASES, DomainSettings, TransferConfig
from zodi_core.prompts import DomainPromptStatus, PromptConfig, compare_prompts


def generated_domains(root: str) -> list[str]:
    """Domains with a paired manifest under ``root`` (at ``layout.paired_manifest_key``), sorted."""
    keys = set(storage.open_storage(root).list(f"{layout.PAIRED}/"))
    domains = {k.split("/")[1].removeprefix("domain=") for k in keys if k.count("/") == 2}
    return sorted(d for d in domains if layout.paired_manifest_key(d) in keys)


def recorded_transfer_config(root: str, domain: str) -> TransferConfig | None:
    """The transfer settings that generated ``domain`` under ``root`` (base seed; domain and
    prompt settings reset: a prompt config decides them); None when nothing records them."""
    config, offset = _recorded(root, domain)
    if config is None:
        return None
    defaults = TransferConfig()
    reset = ("domain", "domain_settings", "prompt", "prompts", "negative_prompt", "strength")
    return config.replace(seed=config.seed - offset, **{f: getattr(defaults, f) for f in reset})


def recorded_domain_settings(root: str, domain: str) -> DomainSettings | None:
    """The prompt settings that generated ``domain`` under ``root`` (how a user-defined domain
    that no config gives is known); None when nothing records them."""
    config, offset = _recorded(root, domain)
    if config is None:
        return None
    kept = config.model_dump(include={"prompt", "negative_prompt", "strength"})
    return DomainSettings(**kept, prompts=config.prompts or None, seed_offset=offset or None)


def _recorded(root: str, domain: str) -> tuple[TransferConfig | None, int]:
    """(recorded transfer config, seed offset folded into its seed), from the paired manifest's
    metadata or that of a shard manifest of its generation; (None, 0) when nothing records it."""
    paired = layout.paired_manifest_uri(root, domain)
    if not storage.exists(paired):
        return None, 0
    table = manifest.read_manifest(paired, "transfer")
    meta = manifest.manifest_metadata(table)
    if "transfer_config" not in meta:  # a flow's merged manifest: one of its shards records it
        digests = set(table.column("config_digest").to_pylist())
        store = storage.open_storage(root)
        shards = store.list(layout.shard_manifests_prefix(domain))
        if key := next((k for k in shards if layout.shard_generation(k) in digests), None):
            meta = manifest.manifest_metadata(manifest.read_manifest(store.uri(key), "transfer"))
    if "transfer_config" not in meta:
        return None, 0
    config = TransferConfig.model_validate_json(meta["transfer_config"])
    return config, int(meta.get("seed_offset", 0))


def base_transfer_config(
    transfer: TransferConfig | None, generated: list[str], root: str
) -> TransferConfig:
    """The settings regenerated domains start from: ``transfer``, else the first recorded
    generation's, else the defaults."""
    if transfer is not None:
        return transfer
    recorded = (recorded_transfer_config(root, d) for d in generated)
    return next((c for c in recorded if c is not None), TransferConfig())


@dataclass
class RegenerationPlan:
    """What a regeneration run will do: each domain's status, the jobs, why nothing (if so)."""

    version: str  # the prompt config's version label
    statuses: list[DomainPromptStatus] = field(default_factory=list)
    #: one per domain to transfer again: its settings, its own prompt settings applied
    jobs: list[TransferConfig] = field(default_factory=list)
    note: str = ""


def plan_regeneration(
    prompts: PromptConfig,
    transfer: TransferConfig | None,
    domains: list[str] | None,
    out_root: str,
    samples_uri: str,
) -> RegenerationPlan:
    """Compare the wanted prompt settings of each domain with what ``out_root`` holds.

    Nothing generated and no samples manifest yet (a scheduled run before any pipeline run) gives
    an empty plan whose ``note`` says why, not a failure.
    """
    generated = generated_domains(out_root)
    names = list(domains) if domains is not None else sorted(set(generated) | set(prompts.domains))
    plan = RegenerationPlan(version=prompts.version)
    if not names:
        plan.note = (
            f"no domain generated under {out_root} and none listed in the prompt config: "
            "nothing to compare"
        )
        return plan
    if not generated and not storage.exists(samples_uri):
        plan.note = (
            f"nothing generated under {out_root} yet and no samples manifest at {samples_uri}: "
            "run the pipeline with storage.root set to this root first (zodi submit); "
            "nothing regenerated"
        )
        return plan
    transfer = base_transfer_config(transfer, generated, out_root)
    transfer = _with_recorded_user_domains(transfer, prompts, names, out_root)
    plan.statuses = compare_prompts(prompts, transfer, names, out_root)
    plan.jobs = [
        prompts.transfer_config(transfer, s.domain) for s in plan.statuses if s.needs_regeneration
    ]
    return plan


def _with_recorded_user_domains(
    transfer: TransferConfig, prompts: PromptConfig, names: list[str], root: str
) -> TransferConfig:
    """``transfer`` plus the recorded settings of each user-defined domain no config defines, so
    it compares unchanged instead of failing for want of a prompt."""
    if transfer.prompt is not None or transfer.prompts:
        return transfer
    settings = dict(transfer.domain_settings)
    for d in names:
        if d in DOMAIN_PHRASES or d in prompts.domains or d in settings:
            continue
        recorded = recorded_domain_settings(root, d)
        if recorded is not None and (recorded.prompt or recorded.prompts):
            settings[d] = recorded
    return transfer.replace(domain_settings=settings)


@dataclass
class DomainOutcome:
    """How one domain's transfer ended; :meth:`of` keeps the transfer flow's result only when it
    is its mapping (a failed run's exception is dropped: the run's message says what failed)."""

    domain: str
    ok: bool
    message: str = ""
    summary: dict[str, Any] | None = None
    paired_uri: str | None = None

    @classmethod
    def of(cls, domain: str, ok: bool, message: str | None, result: Any) -> DomainOutcome:
        result = result if isinstance(result, dict) else {}  # a failed run's exception: none
        summary = (result.get("domains") or {}).get(domain)
        paired = (result.get("paired") or {}).get(domain)
        return cls(domain, ok and paired is not None, message or "", summary, paired)


def build_report(plan: RegenerationPlan, outcomes: list[DomainOutcome]) -> dict[str, Any]:
    """The run's report, JSON-able; each status holds the recorded (``old``) and wanted (``new``)
    prompt settings."""
    return {
        "version": plan.version,
        "note": plan.note,
        "changed": [s.domain for s in plan.statuses if s.needs_regeneration],
        "unchanged": [s.domain for s in plan.statuses if not s.needs_regeneration],
        "regenerated": {o.domain: o.paired_uri for o in outcomes if o.ok},
        "failed": {o.domain: o.message or "transfer failed" for o in outcomes if not o.ok},
        "transfer": {o.domain: o.summary for o in outcomes if o.summary is not None},
        "statuses": [
            s.to_dict() | {"old": [r.to_dict() for r in s.recorded], "new": s.wanted.to_dict()}
            for s in plan.statuses
        ],
    }


def _cell(values: list[dict[str, Any]]) -> str:
    """Prompt settings as one Markdown table cell."""
    neg = [f"; negative {v['negative_prompt']!r}" if v["negative_prompt"] else "" for v in values]
    parts = [f"{v['prompt']!r}, S={v['strength']:g}{n}" for v, n in zip(values, neg, strict=True)]
    return "<br>".join(parts).replace("|", "\\|") or "–"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per domain with its old and new prompt settings."""
    lines = [f"# Prompt regeneration (prompt config version {report['version']})", ""]
    if report.get("note"):
        lines += [report["note"], ""]
    lines += [
        "| domain | status | old settings (digest) | new settings (digest) | regenerated |",
        "|---|---|---|---|---|",
    ]
    for s in report["statuses"]:
        done = "yes" if s["domain"] in report["regenerated"] else ""
        if s["domain"] in report["failed"]:
            done = "FAILED: " + report["failed"][s["domain"]].replace("|", "\\|")
        old = f"{_cell(s['old'])} ({','.join(s['recorded_digests']) or '–'})"
        new = f"{_cell([s['new']])} ({s['wanted_digest']})"
        lines.append(f"| {s['domain']} | {s['status']} | {old} | {new} | {done} |")
    return "\n".join(lines) + "\n"


def summary_line(report: dict[str, Any]) -> str:
    """One log line: the version, what changed, what was regenerated, what failed."""
    if report.get("note") and not report["statuses"]:
        return f"prompt config {report['version']}: {report['note']}"
    return (
        f"prompt config {report['version']}: changed {report['changed']}, "
        f"unchanged {report['unchanged']}, regenerated {sorted(report['regenerated'])}, "
        f"failed {sorted(report['failed'])}"
    )
