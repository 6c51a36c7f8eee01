"""Run planning: which models are trained, what they are called, and how each is evaluated.

The naming rule (``source-only`` or ``zodi-<domain>``) lives here only: runs carry their domain,
so no layer parses a name back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zodi_core.config import TrainConfig

SOURCE_ONLY = "source-only"


def run_name(domain: str | None) -> str:
    """The model name of a training run: ``source-only`` for None, else ``zodi-<domain>``."""
    return SOURCE_ONLY if domain is None else f"zodi-{domain}"


@dataclass(frozen=True)
class TrainingRun:
    """One planned training run: a model (name, domain, mmseg config) and one seed; ``domain``
    None is the source-only baseline (no ZoDi wrapper, no paired manifest)."""

    name: str
    domain: str | None
    mmseg_config: str
    seed: int
    paired_manifest: str | None

    @property
    def source_only(self) -> bool:
        return self.domain is None


def plan_training_runs(train: TrainConfig, paired: Mapping[str, str]) -> list[TrainingRun]:
    """The source-only baseline and one ZoDi model per domain (sorted), each for every seed; all
    share ``train.mmseg_config`` (only the ZoDi wrapper and data differ: the paper's protocol)."""
    models: list[tuple[str | None, str | None]] = [(None, None)]
    models += [(domain, uri) for domain, uri in sorted(paired.items())]
    return [
        TrainingRun(run_name(domain), domain, train.mmseg_config, seed, uri)
        for domain, uri in models
        for seed in train.seeds
    ]


@dataclass(frozen=True)
class EvaluationJob:
    """One evaluation: a model's final checkpoints (one per seed) on targets and/or one proxy
    (``evaluate_checkpoint`` takes one, so one job per proxy; only the first has the targets)."""

    model: str
    checkpoints: tuple[str, ...]
    mmseg_config: str
    manifests: tuple[str, ...]
    proxy: str | None
    proxy_domain: str | None
    slug: str
    #: The domain each of ``manifests`` evaluates (``DatasetSpec.target_domain``), in order.
    target_domains: tuple[str | None, ...] = ()


def plan_evaluations(
    models: Mapping[str, Sequence[Mapping[str, Any]]],
    targets: Sequence[str],
    proxies: Mapping[str, str],
    target_domains: Mapping[str, str | None] | None = None,
) -> list[EvaluationJob]:
    """Evaluation jobs for each trained model (``{name: [train result per seed]}``).

    A ZoDi model gets the targets and its domain's proxy; the source-only model the targets and
    every proxy. ``target_domains``: each target's domain (None: paired by name, older runs).
    """
    jobs = []
    domains = () if target_domains is None else tuple(target_domains.get(t) for t in targets)
    for name, results in sorted(models.items()):
        if not results:
            continue
        ordered = sorted(results, key=lambda r: r["seed"])
        checkpoints = tuple(r["checkpoint"] for r in ordered)
        domain = ordered[0]["domain"]
        # every proxy for the baseline, its own domain's for a ZoDi model
        proxy_domains = sorted(d for d in proxies if domain in (None, d))
        for i, proxy_domain in enumerate(proxy_domains or [None]):
            jobs.append(
                EvaluationJob(
                    model=name,
                    checkpoints=checkpoints,
                    mmseg_config=ordered[0]["mmseg_config"],
                    manifests=tuple(targets) if i == 0 else (),
                    proxy=proxies.get(proxy_domain) if proxy_domain else None,
                    proxy_domain=proxy_domain,
                    slug=name if i == 0 else f"{name}-proxy-{proxy_domain}",
                    target_domains=domains if i == 0 else (),
                )
            )
    return [j for j in jobs if j.manifests or j.proxy]


def collect_evaluations(
    jobs: Sequence[EvaluationJob], results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Fold evaluation results into ``{model: {"targets", "proxy", "reports", "report_jsons"}}``;
    each proxy gets the ``real_mIoU`` of the real target of its domain (None when none)."""
    out: dict[str, Any] = {}
    domains: dict[str, dict[str, str | None]] = {}
    for job, result in zip(jobs, results, strict=True):
        entry = out.setdefault(
            job.model, {"targets": {}, "proxy": {}, "reports": [], "report_jsons": []}
        )
        entry["reports"].append(result["report_md"])
        if result.get("report_json"):  # per-class IoU and confusion PNGs, for the report
            entry["report_jsons"].append(result["report_json"])
        real = [n for n in result["targets"] if not n.startswith("proxy-")]
        if job.target_domains and len(job.target_domains) == len(real):
            domains.setdefault(job.model, {}).update(zip(real, job.target_domains, strict=True))
        for name, miou in result["targets"].items():
            if name.startswith("proxy-"):
                entry["proxy"][job.proxy_domain] = {"mIoU": miou}
            else:
                entry["targets"][name] = {"mIoU": miou}
    for model, entry in out.items():
        explicit = domains.get(model)
        for domain, p in entry["proxy"].items():
            if explicit is not None:
                real = [v["mIoU"] for n, v in entry["targets"].items() if explicit.get(n) == domain]
            else:  # planned without target domains (older callers): the name's domain part
                real = [v["mIoU"] for n, v in entry["targets"].items() if f"-{domain}-" in f"-{n}-"]
            p["real_mIoU"] = real[0] if real else None
    return out
