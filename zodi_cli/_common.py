"""Helpers shared by the ``zodi`` subcommand modules: errors, demo set-up, Prefect settings.

Nothing here imports a heavy library at import time; ``zodi --help`` imports this module.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class CommandError(Exception):
    """An error a command reports as its one final line; ``exit_code`` says which kind.

    ``summary`` (optional) is merged into the ``--json`` line, so that a failed command still
    says what it did (e.g. images written before the failure).
    """

    exit_code = 1

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = dict(summary or {})


class CLIError(CommandError):
    """A usage or configuration error: exit code 2."""

    exit_code = 2


class RunFailed(CommandError):
    """The work itself failed (a failed flow run, failed images, an outage): exit code 1."""

    exit_code = 1


#: Exit codes: 0 success, 1 the work failed, 2 usage or configuration error, 130 interrupted.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _is(err: BaseException, module: str, name: str) -> bool:
    """isinstance against ``module.name`` when that module is loaded (else err cannot be one)."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(err, cls)


def classify(err: BaseException) -> int:
    """The exit code of an exception: 2 for usage/configuration/bad input, 1 for the rest."""
    if isinstance(err, CommandError):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if _is(err, "zodi_core.storage", "TransientStorageError"):  # an outage: the work failed
        return EXIT_FAILED
    if _is(err, "zodi_core.storage", "OutOfSpaceError"):  # a full disk: the work failed
        return EXIT_FAILED
    if _is(err, "zodi_core.storage", "StorageError"):
        # Permanent: credentials, missing bucket, refused key, no permission: configuration.
        return EXIT_USAGE
    if _is(err, "zodi_core.datasets.ingest", "IngestError"):  # bad files found in a dataset
        return EXIT_FAILED
    # ConfigError, ManifestError, PreflightError are ValueErrors: bad configuration or input.
    if isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)):
        return EXIT_USAGE
    return EXIT_FAILED


def _expected(err: BaseException) -> bool:
    """Errors whose message is written for a person (no type name needed)."""
    return (
        isinstance(err, (CommandError, ValueError, FileNotFoundError, PermissionError))
        or _is(err, "zodi_core.storage", "StorageError")
        or _is(err, "zodi_core.model_source", "HubUnreachableError")  # network problem + remedy
    )


def message_lines(err: BaseException) -> list[str]:
    """The error's message as non-empty lines, then its notes (``add_note``: the transfer names
    there the file an error is about); an unexpected exception type is named."""
    lines = [line.rstrip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        lines = [type(err).__name__]
    elif not _expected(err):
        lines[0] = f"{type(err).__name__}: {lines[0]}"
    notes = getattr(err, "__notes__", None) or []
    return lines + [n.strip() for n in notes if isinstance(n, str) and n.strip()]


def models_overrides(models: str | None, controlnet: str | None) -> dict[str, Any]:
    """ModelsConfig fields set by ``--models`` / ``--controlnet`` (every command's one rule).

    A local ``--models DIR`` holding ``controlnet/`` (what ``zodi tiny-models``, ``zodi
    pocket-models`` and ``zodi models download`` write) uses that ControlNet unless
    ``--controlnet`` names another.
    """
    from zodi_core.model_source import holds_controlnet, is_local

    out: dict[str, Any] = {}
    if models:
        out["base"] = models
        if is_local(models) and not Path(models).expanduser().is_dir():
            raise FileNotFoundError(f"--models: model folder {models!r} does not exist")
        if holds_controlnet(models):
            out["controlnet"] = None  # <base>/controlnet
    if controlnet:
        out["controlnet"] = controlnet
    return out


def prepare_demo(workdir: Path, seed: int = 0, log: Callable[[str], None] | None = None):
    """Write the demo's synthetic data under ``workdir``; choose its models.

    The models are the project's committed pocket models (diffusion models trained on the
    synthetic world by ``zodi pocket-models``: their transfer means something), or, in a checkout
    without them, tiny random-weight models written under ``workdir`` (reused).

    Returns ``(data, models_dir)``: the dataset roots by name and the models' folder.
    """
    from zodi_core.datasets.synth import write_synthetic
    from zodi_core.pocket import WEIGHTS_DIR, is_pocket_models
    from zodi_core.transfer.models import write_tiny_models

    say = log or (lambda _msg: None)
    say(f"1/3 synthetic data → {workdir / 'data'}")
    data = write_synthetic(workdir / "data", seed=seed)
    if is_pocket_models(WEIGHTS_DIR):
        say(f"2/3 pocket models (trained here on the synthetic world): {WEIGHTS_DIR}")
        return data, WEIGHTS_DIR
    models_dir = workdir / "models" / "tiny-sd15-controlnet"
    if not (models_dir / "model_index.json").exists():
        say(f"2/3 tiny models → {models_dir}")
        write_tiny_models(models_dir)
    else:
        say(f"2/3 tiny models: reusing {models_dir}")
    return data, models_dir


def demo_config(workdir: Path, data: dict[str, Any], models_dir: Path, domains: list[str]):
    """The demo's PipelineConfig: synthetic roots, the demo's models, local storage in workdir.

    With pocket models the negative prompt is empty (they learned the empty caption as classifier-
    free guidance's unconditional branch, and their corpus holds no "worst quality" images) and T
    is 10, not the demo preset's 4: at 4 steps their night scenes come out brown and muddled.
    """
    from zodi_core.config import DatasetSpec, PipelineConfig
    from zodi_core.pocket import is_pocket_models

    transfer: dict[str, Any] = {"models": {"base": str(models_dir), "controlnet": None}}
    if is_pocket_models(Path(models_dir)):
        transfer.update(negative_prompt="", num_inference_steps=10)

    return PipelineConfig.preset(
        "demo",
        source=DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="train"),
        source_val=DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="val"),
        targets=[
            DatasetSpec(dataset="acdc", root=data["acdc"], condition=d, split="val")
            for d in domains
            if d != "game"
        ]
        + ([DatasetSpec(dataset="gta5", root=data["gta5"])] if "game" in domains else []),
        domains=domains,
        storage={"root": str(workdir / "artifacts")},
        transfer=transfer,
    )


# Prefect ---------------------------------------------------------------------------------------


@contextmanager
def prefect_session(workdir: Path | None = None, verbose: bool = False) -> Iterator[None]:
    """Settings for a Prefect-backed command, set before Prefect reads them, restored after.

    The ephemeral server's telemetry is off and it gets 120 s to start (Prefect's 20 s is too
    short on a busy machine). With ``workdir`` (the demo), Prefect's database and cached results
    live inside it, so a second run finds the first run's cache records. Unless ``verbose``,
    Prefect's console logs (flow/task run lines, tracebacks of failed tasks) and Python warnings
    stay out of the console: the command prints its own progress and ends a failure with one
    line. An explicit user setting of any of these variables wins.
    """
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    if workdir is not None:
        env["PREFECT_HOME"] = str(workdir / ".prefect")
        env["PREFECT_LOCAL_STORAGE_PATH"] = str(workdir / ".prefect" / "results")
    if not verbose:
        env["PREFECT_LOGGING_LEVEL"] = "WARNING"
        env["PREFECT_SERVER_LOGGING_LEVEL"] = "ERROR"
    added = [key for key in env if key not in os.environ]
    for key in added:
        os.environ[key] = env[key]
    try:
        if verbose:
            yield
        else:
            with _muted_console(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def _muted_console() -> Iterator[None]:
    """Raise every console log handler above CRITICAL for the duration; then restore them.

    Prefect configures logging once per process (``prefect.main``; done here if not yet): its
    console handler sits on the root logger, where flow and task run records propagate, and on
    the server's loggers (uvicorn, fastapi). They are muted by level, whatever configured them;
    the API handler is untouched, so a server keeps the run logs for its UI. Handlers created
    during the run (mmengine's loggers) are left alone: training keeps TrainConfig.log_level.
    """
    import logging

    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    muted: dict[int, tuple[logging.Handler, int]] = {}
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for handler in lg.handlers:
            console = isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            )
            if console and id(handler) not in muted:
                muted[id(handler)] = (handler, handler.level)
                handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in muted.values():
            handler.setLevel(level)


def flow_failure(state: Any, result: Any, summary: dict[str, Any] | None = None) -> CommandError:
    """The one-line error of a flow run that did not complete.

    The exception that failed the run gives the message and the exit code (2 for configuration
    errors, 1 otherwise); without one, the state's name and message.
    """
    if isinstance(result, BaseException):
        lines = message_lines(result)
        cls = CLIError if classify(result) == EXIT_USAGE else RunFailed
        err = cls("\n".join(lines), summary)
        err.__cause__ = result
        return err
    message = (getattr(state, "message", None) or "").strip()
    name = getattr(state, "name", None) or "failed"
    return RunFailed(f"flow run ended {name}" + (f": {message}" if message else ""), summary)
