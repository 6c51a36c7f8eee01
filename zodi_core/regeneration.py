"""Regeneration when prompts change: which domains to compare, what to regenerate, the report.

Plain functions over a :class:`~zodi_core.prompts.PromptConfig` and storage, wrapped by
``tasks/regenerate.py`` and sequenced by ``flows/regenerate.py``:

1. :func:`plan_regeneration`: the domains to look at (given, or every domain already generated
   under the root plus every domain the prompt config lists), each compared with its paired
   manifest (:func:`~zodi_core.prompts.compare_prompts`), and the transfer config of each domain to
   regenerate. When nothing has been generated under the root and its samples manifest does not
   exist (a scheduled run right after ``zodi deploy``, before any pipeline run), the plan is empty
   and says why: nothing to do is not a failure.
2. the flow transfers each planned domain and records a :class:`DomainOutcome` per domain;
3. :func:`build_report`: the report (a JSON-able dict) and :func:`render_markdown` its Markdown,
   with the old and new prompt settings of every domain, not only their digests.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from zodi_core import layout, manifest, storage
from zodi_core.config import DOMAIN_PHRASES, DomainSettings, TransferConfig
from zodi_core.prompts import DomainPromptStatus, PromptConfig, PromptValues, compare_prompts


def generated_domains(root: str) -> list[str]:
    """Domains with a paired manifest under ``root`` (at ``layout.paired_manifest_key``), sorted."""
    found = set()
    for key in storage.open_storage(root).list(f"{layout.PAIRED}/"):
        folder = key.split("/")[1] if key.count("/") == 2 else ""
        domain = folder.removeprefix("domain=")
        if folder.startswith("domain=") and key == layout.paired_manifest_key(domain):
            found.add(domain)
    return sorted(found)


#: The prompt settings of a transfer config: a prompt config decides them, never a recording.
PROMPT_FIELDS = ("prompt", "prompts", "negative_prompt", "strength")


def recorded_transfer_config(root: str, domain: str) -> TransferConfig | None:
    """The transfer settings that generated ``domain``'s paired manifest under ``root``, with
    the prompt settings reset to their defaults; None when nothing records them.

    A paired manifest's rows carry their generation digest (``config_digest``); the shard
    manifests of that generation (``layout.shard_manifest_key``) record the full transfer config
    in their metadata.
    """
    config = _recorded_config(root, domain)
    if config is None:
        return None
    defaults = TransferConfig()
    # the domain too: a user-defined domain's recording is valid only with its prompt
    reset = ("domain", "domain_settings", *PROMPT_FIELDS)
    return config.replace(**{f: getattr(defaults, f) for f in reset})


def recorded_domain_settings(root: str, domain: str) -> DomainSettings | None:
    """The prompt settings that generated ``domain`` under ``root`` (prompt or prompts in their
    order, negative prompt, strength); None when nothing records them. The definition of a
    user-defined domain that neither the prompt config nor the transfer config gives."""
    recorded = _recorded(root, domain)
    if recorded is None:
        return None
    config, offset = recorded
    return DomainSettings(
        prompt=config.prompt,
        prompts=config.prompts or None,
        negative_prompt=config.negative_prompt,
        strength=config.strength,
        seed_offset=offset or None,
    )


def _recorded_config(root: str, domain: str) -> TransferConfig | None:
    """The recorded transfer config with the base seed (the domain's seed offset taken out)."""
    recorded = _recorded(root, domain)
    if recorded is None:
        return None
    config, offset = recorded
    return config.replace(seed=config.seed - offset)


def _recorded(root: str, domain: str) -> tuple[TransferConfig, int] | None:
    """(the resolved transfer config a shard manifest records, the seed offset folded into its
    seed: 0 for recordings older than that field)."""
    paired = layout.paired_manifest_uri(root, domain)
    if not storage.exists(paired):
        return None
    table = manifest.read_manifest(paired, "transfer")
    # A paired manifest written by one transfer (`zodi transfer`) records its config itself; the
    # flows' merged one does not, its shard manifests do.
    tables = [table]
    digests = sorted(set(table.column("config_digest").to_pylist()))
    store = storage.open_storage(root)
    # The folder of the domain's shard manifests, as the layout names them.
    prefix = posixpath.dirname(layout.shard_manifest_key(domain, "s", "d", "g")) + "/"
    for key in store.list(prefix):
        if any(key.endswith(f"-{d}.parquet") for d in digests):
            tables.append(manifest.read_manifest(store.uri(key), "transfer"))
            break
    for t in tables:
        meta = manifest.manifest_metadata(t)
        if "transfer_config" in meta:
            config = TransferConfig.model_validate_json(meta["transfer_config"])
            return config, int(meta.get("seed_offset", 0))
    return None


def base_transfer_config(
    transfer: TransferConfig | None, generated: list[str], root: str
) -> TransferConfig:
    """The settings regenerated domains start from: ``transfer`` when given; else the settings
    of the root's last generation (the first generated domain that records them, prompt settings
    reset); else the defaults."""
    if transfer is not None:
        return transfer
    for domain in generated:
        recorded = recorded_transfer_config(root, domain)
        if recorded is not None:
            return recorded
    return TransferConfig()


@dataclass(frozen=True)
class RegenerationJob:
    """One domain to transfer again, with its own prompt settings applied."""

    domain: str
    transfer: TransferConfig


@dataclass
class RegenerationPlan:
    """What a regeneration run will do.

    Attributes:
        version: the prompt config's version label.
        statuses: every compared domain against its paired manifest.
        jobs: the domains to regenerate (changed or missing), in ``statuses`` order.
        note: why nothing is compared or regenerated, when that is the case (else "").
    """

    version: str
    statuses: list[DomainPromptStatus] = field(default_factory=list)
    jobs: list[RegenerationJob] = field(default_factory=list)
    note: str = ""


def plan_regeneration(
    prompts: PromptConfig,
    transfer: TransferConfig | None,
    domains: list[str] | None,
    out_root: str,
    samples_uri: str,
) -> RegenerationPlan:
    """Compare the wanted prompt settings of each domain with what ``out_root`` holds.

    Args:
        prompts: the prompt config.
        transfer: the base transfer settings, each domain's prompt settings applied on top;
            None: those the root's last generation recorded (:func:`base_transfer_config`).
        domains: the domains to compare; None: every domain generated under ``out_root`` plus
            every domain ``prompts`` lists.
        out_root: the storage root the pipeline writes (paired manifests under ``paired/``).
        samples_uri: the source samples manifest a regenerated domain is transferred from.
    Returns:
        the :class:`RegenerationPlan`; empty with a ``note`` when there is nothing to do yet.
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
        RegenerationJob(s.domain, prompts.transfer_config(transfer, s.domain))
        for s in plan.statuses
        if s.needs_regeneration
    ]
    return plan


def _with_recorded_user_domains(
    transfer: TransferConfig, prompts: PromptConfig, names: list[str], root: str
) -> TransferConfig:
    """``transfer`` with the recorded settings of each user-defined domain in ``names`` that
    neither it nor ``prompts`` defines (a pipeline's own domain the Variable does not list):
    nothing asks to change it, so it compares unchanged instead of failing for want of a
    prompt. A domain with no recording either is left out (its comparison names it)."""
    if transfer.prompt is not None or transfer.prompts:
        return transfer
    settings = dict(transfer.domain_settings)
    for d in names:
        if d in DOMAIN_PHRASES or d in prompts.domains or d in settings:
            continue
        recorded = recorded_domain_settings(root, d)
        if recorded is not None and (recorded.prompt or recorded.prompts):
            settings[d] = recorded
    if settings == transfer.domain_settings:
        return transfer
    return transfer.replace(domain_settings=settings)


@dataclass
class DomainOutcome:
    """How one domain's transfer ended.

    ``result`` is the transfer flow's return value (or a failed run's data) when it is the
    expected mapping; anything else — an exception a failed run carries — is dropped, and the
    run's own message says what went wrong.
    """

    domain: str
    ok: bool
    message: str = ""
    summary: dict[str, Any] | None = None
    paired_uri: str | None = None

    @classmethod
    def of(cls, domain: str, ok: bool, message: str | None, result: Any) -> DomainOutcome:
        summary = paired = None
        if isinstance(result, dict):
            summary = (result.get("domains") or {}).get(domain)
            paired = (result.get("paired") or {}).get(domain)
        return cls(domain, ok and paired is not None, message or "", summary, paired)


def _values(v: PromptValues) -> dict[str, Any]:
    out = {"prompt": v.prompt, "negative_prompt": v.negative_prompt, "strength": v.strength}
    if v.prompts:
        out["prompts"] = list(v.prompts)
    return out


def build_report(plan: RegenerationPlan, outcomes: list[DomainOutcome]) -> dict[str, Any]:
    """The run's report, JSON-able.

    ``{"version", "note", "changed", "unchanged", "regenerated": {domain: paired URI},
    "failed": {domain: message}, "transfer": {domain: summary}, "statuses": [...]}``; each status
    holds the recorded (``old``) and wanted (``new``) prompt, negative prompt and strength.
    """
    report: dict[str, Any] = {
        "version": plan.version,
        "note": plan.note,
        "changed": [s.domain for s in plan.statuses if s.needs_regeneration],
        "unchanged": [s.domain for s in plan.statuses if not s.needs_regeneration],
        "regenerated": {},
        "failed": {},
        "transfer": {},
        "statuses": [],
    }
    for s in plan.statuses:
        status = s.to_dict()
        status["old"] = [_values(r) for r in s.recorded]
        status["new"] = _values(s.wanted)
        report["statuses"].append(status)
    for outcome in outcomes:
        if outcome.summary is not None:
            report["transfer"][outcome.domain] = outcome.summary
        if outcome.ok:
            report["regenerated"][outcome.domain] = outcome.paired_uri
        else:
            report["failed"][outcome.domain] = outcome.message or "transfer failed"
    return report


def _cell(values: list[dict[str, Any]]) -> str:
    if not values:
        return "–"
    parts = []
    for v in values:
        neg = f"; negative {v['negative_prompt']!r}" if v["negative_prompt"] else ""
        parts.append(f"{v['prompt']!r}, S={v['strength']:g}{neg}")
    return "<br>".join(parts).replace("|", "\\|")


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


__all__ = [
    "DomainOutcome",
    "RegenerationJob",
    "RegenerationPlan",
    "build_report",
    "generated_domains",
    "plan_regeneration",
    "render_markdown",
    "summary_line",
]
