"""Fan-out of one domain's transfer over child flow runs, one per group of shards (plain logic
for ``flows/fanout.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from zodi_core.config import TransferConfig
from zodi_core.report import RunSummary


@dataclass
class ChildOutcome:
    """One child flow run: its group of shards, final state and transfer summary."""

    group: list[int]
    attempt: int
    flow_run_id: str
    state: str
    ok: bool
    message: str = ""
    summary: dict[str, Any] | None = None


@dataclass
class FanoutReport:
    """Every child of every attempt, in launch order."""

    children: list[ChildOutcome] = field(default_factory=list)

    def final(self) -> dict[int, ChildOutcome]:
        """The last attempt of each group, by the group's first shard index."""
        return {c.group[0]: c for c in self.children}

    def failed(self) -> list[ChildOutcome]:
        return [c for c in self.final().values() if not c.ok]


def run_children(
    groups: Sequence[list[int]],
    launch: Callable[[list[int], int], str],
    wait: Callable[[list[str]], dict[str, dict[str, Any]]],
    retries: int,
    domain: str,
) -> FanoutReport:
    """Launch one child per group, wait for all, relaunch only the failed groups (``retries``
    more times at most); ``wait(ids)`` returns each run's final state once every run is final
    (``tasks.fanout.wait_for_flow_runs_task``); a child's summary is its result's ``domain``'s."""
    if retries < 0:
        raise ValueError(f"child_retries: expected an integer >= 0, received {retries}")
    report = FanoutReport()
    todo = list(range(len(groups)))
    for attempt in range(retries + 1):
        ids = {launch(list(groups[i]), attempt): i for i in todo}
        ends = wait(list(ids))
        for r, i in ids.items():
            end = ends[r]
            summary = ((end["result"] or {}).get("domains") or {}).get(domain)
            state, ok, message = end["state"], end["ok"], end["message"]
            report.children.append(ChildOutcome(groups[i], attempt, r, state, ok, message, summary))
        todo = [i for r, i in ids.items() if not ends[r]["ok"]]
        if not todo:
            break
    return report


def child_parameters(
    samples_uri: str, domain: str, out_root: str, config: TransferConfig, shard_size: int,
    group: list[int],
) -> dict[str, Any]:  # fmt: skip
    """The ``transfer_flow`` parameters of the child that transfers ``group``'s shards."""
    return {
        "samples_uri": samples_uri,
        "domains": [domain],
        "out_root": out_root,
        "transfer": config.model_dump(mode="json"),
        "shard_size": shard_size,
        "shard_indices": group,
    }


def child_run_name(domain: str, group: list[int], attempt: int) -> str:
    return f"{domain}-shards-{group[0]}-{group[-1]}-try{attempt}"


def merge_child_summaries(report: FanoutReport) -> RunSummary:
    """What the final attempt of every group did, added up."""
    summary = RunSummary()
    for child in report.final().values():
        for key, value in (child.summary or {}).items():  # lists and counts add, dicts merge
            old = getattr(summary, key)
            setattr(summary, key, old | value if isinstance(old, dict) else old + value)
    return summary


def fanout_result(
    domain: str, report: FanoutReport, summary: RunSummary, paired: str | None
) -> dict[str, Any]:
    """The fan-out flow's return value: ``{"domain", "paired", "summary", "children"}``."""
    return {
        "domain": domain,
        "paired": paired,
        "summary": asdict(summary),
        "children": [asdict(c) for c in report.children],
    }


def failure_message(report: FanoutReport) -> str:
    """One line naming the children (and their shards) that failed every attempt."""
    names = "; ".join(f"shards {c.group} ({c.state}: {c.message})" for c in report.failed())
    return f"fan-out children failed: {names}"
