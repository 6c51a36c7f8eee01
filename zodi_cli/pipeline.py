"""``zodi demo`` (the README's main job) and ``zodi pipeline``: pipeline_flow under Prefect."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zodi_cli._common import (
    command,
    demo_config,
    flow_failure,
    models_overrides,
    prefect_session,
    prepare_demo,
    shared,
)

DEMO_NOTE = (
    "The demo runs on the pocket models (zodi_core/pocket/weights: small diffusion models trained "
    "on the synthetic world, see their MODEL_CARD.md) at 64x128 with 10 DDIM steps and a few "
    "training iterations: the images take the target look but follow the layout loosely, and the "
    "mIoU numbers show how results are reported, not the paper's. To run for real: `zodi pipeline "
    "--config examples/cityscapes_to_acdc.yaml --models stable-diffusion-v1-5/stable-diffusion-"
    "v1-5` (or a local folder) with real Cityscapes/ACDC/GTA5 roots in the config and "
    "`storage.root: s3://bucket/prefix`."
)


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "demo", run_demo,
        "run the whole pipeline on synthetic data and tiny models (CPU, minutes)",
        "Synthetic street scenes + the pocket models → ingest → sharded transfer → train "
        "source-only and ZoDi → evaluate → report, with Prefect in ephemeral mode and local "
        "storage under --workdir. A second run reuses every cached shard.",
        {
            "--workdir": {"default": "zodi-demo", "help": "work folder (default: ./zodi-demo)"},
            "--domains": {"default": "night", "help": "comma-separated target domains"},
            "--seed": {"type": int, "default": 0, "help": "seed of the synthetic data"},
        },
    )  # fmt: skip
    command(sub, parent, "pipeline", run_pipeline,
        "run pipeline_flow on a YAML config",
        "Run the whole pipeline described by a PipelineConfig YAML file (see examples/). Prefect "
        "runs in ephemeral mode unless PREFECT_API_URL is set.",
        {
            "--config": {"required": True, "help": "PipelineConfig YAML file (see examples/); "
                         "relative paths in it are relative to its folder"},
            **shared("--models", "--controlnet"),
            "--storage": "storage root: folder or s3://bucket/prefix (overrides the config)",
            "--no-preflight": {"action": "store_true", "help": "skip the checks of dataset "
                               "roots, models and storage before the run"},
        },
    )  # fmt: skip


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core import manifest

    workdir = Path(args.workdir).resolve()
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    data, models_dir = prepare_demo(workdir, args.seed, log=lambda m: print(f"[demo] {m}"))
    config = demo_config(workdir, data, models_dir, domains)
    print("[demo] 3/3 pipeline_flow (Prefect, ephemeral)")
    summary = _run(config, args.verbose, workdir=workdir)
    root = Path(config.storage.root)
    for path in sorted((root / "manifests").glob("*.parquet")):
        if not path.name.endswith(".rejects.parquet"):
            rows = manifest.summarize(manifest.read_manifest(str(path)))
            groups = ", ".join(
                f"{g['count_all']} {g.get('dataset', '')}/{g.get('split', '')}/{g.get('domain', '')}"
                for g in rows.get("groups", [])
            )
            print(f"[demo] manifest {path.stem}: {rows['rows']} rows ({groups}) → {path}")
    for name in ("json", "md"):  # the README promises the report in the work folder itself
        (workdir / f"report.{name}").write_bytes((root / f"report.{name}").read_bytes())
        summary[f"report_{name}"] = str(workdir / f"report.{name}")
    print(f"[demo] report: {workdir / 'report.md'} and {workdir / 'report.json'}")
    for domain, grid in summary.get("sample_grids", {}).items():
        print(f"[demo] sample grid ({domain}): {grid}")
    print(f"[demo] note: {DEMO_NOTE}")
    return summary


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.config import PipelineConfig

    overrides: dict[str, Any] = {}
    if models := models_overrides(args.models, args.controlnet):
        overrides["transfer"] = {"models": models}
    if args.storage:
        overrides["storage"] = {"root": args.storage}
    config = PipelineConfig.from_yaml(args.config, **overrides)
    return _run(config, args.verbose, skip_preflight=args.no_preflight)


def _run(
    config: Any, verbose: bool, workdir: Path | None = None, skip_preflight: bool = False
) -> dict[str, Any]:
    """Preflight, then pipeline_flow with Prefect's console logs off unless ``verbose``; a
    failed flow run becomes one error line (:func:`flow_failure`)."""
    from zodi_core.preflight import check_pipeline

    if not skip_preflight:
        check_pipeline(config)  # raises PreflightError listing every problem (exit 2)
        print("[pipeline] preflight ok: dataset roots, models, storage")
    with prefect_session(workdir, verbose):
        from prefect.settings import PREFECT_API_URL

        from flows.pipeline import pipeline_flow

        if not (server := PREFECT_API_URL.value()):
            start_tied_ephemeral_server()
            server = "ephemeral (set PREFECT_API_URL to use a server)"
        print(f"[pipeline] pipeline_flow → {config.storage.root}; Prefect: {server}")
        n_datasets = 1 + bool(config.source_val) + len(config.targets)
        with stage_lines(n_datasets), first_interrupt_stops("zodi pipeline"):
            # the flow's own preflight (step 0) is for deployed runs: the CLI just checked
            state = pipeline_flow(config, preflight=False, return_state=True)
        result = state.result(raise_on_failure=False)
    transfer = result.get("transfer", {}) if isinstance(result, dict) else {}
    for domain, s in transfer.items():
        for shard, err in s["shards_failed"].items():
            print(f"[transfer] {domain}: FAILED {shard}: {err}")
    if not state.is_completed():
        raise flow_failure(state, result, {"transfer": transfer})
    print(f"[pipeline] done: report {result['uris'].get('markdown') or result['uris']}")
    grids_results = {key: result.get(key, {}) for key in ("sample_grids", "results")}
    return {"report": result["uris"], "transfer": transfer, **grids_results}


# Ctrl-C ------------------------------------------------------------------------------------------

#: Seconds the interrupt handler gives the API to record the run as Crashed.
CRASH_REPORT_TIMEOUT_S = 3.0


@contextlib.contextmanager
def first_interrupt_stops(prog: str) -> Iterator[None]:
    """The first Ctrl-C (SIGINT) ends a flow run at once, cleanly: Prefect's engine would wait for
    its worker threads (training, a GPU shard), which outlive a second press. The run is marked
    Crashed (best effort), cache locks released, the ephemeral server stopped, one line, exit 130;
    writes are atomic, so a rerun skips finished images and resumes training."""

    def stop(signum: int, frame: Any) -> None:
        from prefect.server.api.server import SubprocessASGIServer

        from tasks._cache import release_held_locks

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second press does not cut this short
        _report_crashed()
        held = release_held_locks()
        for server in list(SubprocessASGIServer._instances.values()):  # ours: the ephemeral one
            with contextlib.suppress(Exception):  # best effort: the process exits anyway
                server.stop()
        sys.stdout.flush()
        print(
            f"{prog}: interrupted (Ctrl-C): run stopped, {len(held)} cache lock(s) released; "
            "rerun the same command to continue",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        os._exit(130)

    with contextlib.ExitStack() as restore:
        if threading.current_thread() is threading.main_thread():  # signals go to the main thread
            restore.callback(signal.signal, signal.SIGINT, signal.signal(signal.SIGINT, stop))
        yield


def start_tied_ephemeral_server() -> None:
    """Start Prefect's ephemeral API server as a child the kernel stops when this process dies, even
    by SIGKILL (``PR_SET_PDEATHSIG`` follows the starting thread: hence the main thread, before the
    flow); Prefect's clients find the singleton running. Off Linux Prefect starts it itself."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return
    import ctypes
    import functools
    import subprocess

    from prefect.server.api.server import SubprocessASGIServer

    # in the child: SIGTERM when the parent dies (prctl option 1: PR_SET_PDEATHSIG)
    die_with_parent = functools.partial(ctypes.CDLL(None).prctl, 1, signal.SIGTERM)

    class TiedServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            popen = subprocess.Popen
            # only around Prefect's one Popen call
            subprocess.Popen = functools.partial(popen, preexec_fn=die_with_parent)  # type: ignore
            try:
                return super()._run_uvicorn_command()
            finally:
                subprocess.Popen = popen  # type: ignore[misc]

    TiedServer().start()  # registered under Prefect's singleton key: SubprocessASGIServer()


def _report_crashed() -> None:
    """Mark the current flow run and its parents (a domain's transfer, the pipeline run around
    it) Crashed on the API, in a thread bounded by :data:`CRASH_REPORT_TIMEOUT_S`."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Crashed

    run = getattr(FlowRunContext.get(), "flow_run", None)

    def report(flow_run: Any = run) -> None:
        with contextlib.suppress(Exception), get_client(sync_client=True) as client:  # best effort
            while flow_run is not None:
                state = Crashed(message="interrupted (Ctrl-C)")
                client.set_flow_run_state(flow_run.id, state, force=True)
                task_run = flow_run.parent_task_run_id  # a subflow's: the task that ran it
                parent = task_run and client.read_task_run(task_run).flow_run_id
                flow_run = client.read_flow_run(parent) if parent else None

    if run is not None:
        worker = threading.Thread(target=report, daemon=True)
        worker.start()
        worker.join(CRASH_REPORT_TIMEOUT_S)


# Stage progress ----------------------------------------------------------------------------------

#: Prefect's run loggers: their records carry the flow and task run names (``extra``).
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
_FINISHED = re.compile(r"Finished in state (\w+)")
_SHARD = re.compile(r"transfer-(?P<domain>.+)-shard-\d+")
_TRAIN = re.compile(r"train-(?P<name>.+)-seed(?P<seed>\d+)")
#: transfer_flow's line per domain: "<domain>: " + zodi_core.report.RunSummary.line()
_DOMAIN_SUMMARY = re.compile(r"\S+: shards: \d+ computed")


class StageLines(logging.Handler):
    """Prefect's flow and task run records → one compact line per stage event, on ``stream``
    (``[transfer] night: 3 shards done``); shard lines at most one per ``interval_s`` per domain.
    The second transfer_flow run is the proxy (source val split); training prints its own
    iteration line (zodi_core.seg.hooks)."""

    def __init__(self, n_datasets: int, stream: Any = None, interval_s: float = 5.0) -> None:
        super().__init__(logging.INFO)
        self.n_datasets = n_datasets
        self.stream = stream
        self.interval_s = interval_s
        self.flows: defaultdict[str, list[str]] = defaultdict(list)  # name → run ids, in order
        self.done: Counter[tuple[str, str]] = Counter()
        self.last: dict[tuple[str, str], float] = {}

    def say(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)

    def _transfer_label(self, run: str | None) -> str:
        return "proxy" if run in self.flows["transfer_flow"][1:] else "transfer"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            flow = getattr(record, "flow_name", None) or ""
            task = getattr(record, "task_run_name", None)
            run = getattr(record, "flow_run_id", None)
            if task is None:  # a flow run's own record
                if message.startswith("Beginning") and run not in self.flows[flow]:
                    self.flows[flow].append(run)
                    if flow == "train_flow":
                        which = "source-only baseline" if len(self.flows[flow]) == 1 else "ZoDi"
                        self.say(f"[train] {which}")
                elif flow == "transfer_flow" and _DOMAIN_SUMMARY.match(message):
                    self.say(f"[{self._transfer_label(run)}] {message}")
                return
            if not (finished := _FINISHED.match(message)):
                return
            state = finished.group(1)
            if shard := _SHARD.fullmatch(task):
                key = (self._transfer_label(run), shard["domain"])
                self.done[key] += 1
                now = time.monotonic()
                failed = state not in ("Completed", "Cached")
                if failed or now - self.last.get(key, float("-inf")) >= self.interval_s:
                    self.last[key] = now
                    self.say(f"[{key[0]}] {key[1]}: {self.done[key]} shard(s) done ({state})")
            elif getattr(record, "task_name", "") == "ingest_dataset_task":
                self.done["ingest", ""] += 1
                self.say(f"[ingest] {self.done['ingest', '']}/{self.n_datasets} datasets ({state})")
            elif train := _TRAIN.fullmatch(task):
                self.say(f"[train] {train['name']} seed {train['seed']}: {state}")
            elif task.startswith("score-"):
                self.say(f"[quality] {task.removeprefix('score-')}: scored ({state})")
            elif task.startswith("evaluate-"):
                self.say(f"[evaluate] {task.removeprefix('evaluate-')}: {state}")
        except Exception:  # noqa: BLE001 - progress lines never fail the run
            self.handleError(record)


@contextlib.contextmanager
def stage_lines(n_datasets: int, stream: Any = None) -> Iterator[StageLines]:
    """Print :class:`StageLines` for the flows run inside; Prefect's run loggers pass INFO
    records meanwhile (their console output stays muted unless --verbose), then are restored."""
    handler = StageLines(n_datasets, stream)
    with contextlib.ExitStack() as restore:
        for lg in map(logging.getLogger, RUN_LOGGERS):
            restore.callback(lg.setLevel, lg.level)
            restore.callback(lg.removeHandler, handler)
            lg.addHandler(handler)
            if not lg.isEnabledFor(logging.INFO):
                lg.setLevel(logging.INFO)
        yield handler
