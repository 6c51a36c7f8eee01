"""What the ``zodi`` subcommands share: options, errors and the error line, config overrides, the
demo set-up, Prefect settings. No heavy import at module level (``zodi --help`` imports it)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from zodi_core.config.base import PRESET_NAMES, Dtype

# Options -----------------------------------------------------------------------------------------


def count(text: str) -> int:
    """argparse type of a count: an integer >= 1 (the flag is named in the usage error)."""
    if int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, received {text}")
    return int(text)


def size(text: str) -> tuple[int, int]:
    """argparse type of a size ``WIDTHxHEIGHT`` with positive sides."""
    if not (sides := re.fullmatch(r"0*([1-9]\d*)x0*([1-9]\d*)", text.strip().lower())):
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT with positive sides such as 256x128, received {text!r}"
        )
    return int(sides[1]), int(sides[2])


#: Options several subcommands share, declared once: flags → add_argument keywords.
SHARED: dict[str, dict[str, Any]] = {
    "--json": {"action": "store_true", "help": "end with one line of JSON summarising what was "
               "done (also on failure: ok=false and the error)"},
    "-v --verbose": {"action": "store_true", "default": argparse.SUPPRESS,
                     "help": "show library and Prefect logs, and the traceback of an error"},
    "--models": {"help": "base model: hub id or local folder (a controlnet/ inside is used; "
                 "overrides the settings)"},
    "--controlnet": {"help": "ControlNet: hub id or local folder (overrides the settings)"},
    "--preset": {"default": "default", "choices": PRESET_NAMES,
                 "help": "settings preset the other options override (default: default)"},
    "--device": {"help": "auto (default: CUDA when available), cpu, cuda or cuda:N"},
    "--dtype": {"choices": get_args(Dtype),
                "help": "weights' dtype (default: auto, float16 on CUDA, float32 on CPU)"},
    "--steps": {"type": count, "dest": "num_inference_steps", "metavar": "STEPS",
                "help": "T, DDIM steps of the full schedule"},
    "--batch-size": {"type": count, "help": "images per sampler call"},
    # the tiny random-weight model writers' (tiny-models, tiny-clip)
    "--out": {"required": True, "help": "output folder"},
    "--seed": {"type": int, "default": 0, "help": "weight initialisation seed"},
}  # fmt: skip


def field_options(model: Any, *fields: str, **changes: Any) -> dict[str, dict[str, Any]]:
    """Options that set ``model``'s ``fields`` (``--lambda-sim`` sets ``lambda_sim``): the help is
    the field's description (its one owner) and default, the type and required-ness the field's."""
    options = {}
    for field in fields:
        info = model.model_fields[field]
        kind = info.annotation
        kind = get_args(kind)[0] if type(None) in get_args(kind) else kind  # X | None
        spec = {
            "dest": field,
            "required": info.is_required(),
            **({"choices": get_args(kind)} if get_origin(kind) is Literal else {}),
            **({"type": kind} if kind in (int, float) else {}),
            **({"action": argparse.BooleanOptionalAction} if kind is bool else {}),
            **changes,
        }
        text = info.description.replace("%", "%%")  # argparse formats help with %
        if isinstance(info.default, int | float | str) and not spec["required"]:
            text += f" (default: {info.default!r})"
        options["--" + field.replace("_", "-")] = {"help": text, **spec}
    return options


def shared(*flags: str, **changes: Any) -> dict[str, dict[str, Any]]:
    """The :data:`SHARED` declarations of ``flags``, with a command's ``changes`` (help, default)."""
    return {flag: {**SHARED[flag], **changes} for flag in flags}


def add_options(p: argparse.ArgumentParser, options: dict[str, str | dict[str, Any]]) -> None:
    """Add options declared as ``{"--flag": help}`` or ``{"--flag": add_argument keywords}``."""
    for flags, spec in options.items():
        p.add_argument(*flags.split(), **({"help": spec} if isinstance(spec, str) else spec))


def command(
    sub: argparse._SubParsersAction,
    parent: argparse.ArgumentParser,
    name: str,
    func: Callable[[argparse.Namespace], dict[str, Any]],
    summary: str,
    description: str,
    options: dict[str, str | dict[str, Any]],
) -> argparse.ArgumentParser:
    """Register subcommand ``name``: ``func(args)`` does the work and returns its JSON summary."""
    p = sub.add_parser(name, parents=[parent], help=summary, description=description)
    add_options(p, options)
    p.set_defaults(func=func)
    return p


def given(args: argparse.Namespace, fields: tuple[str, ...]) -> dict[str, Any]:
    """``{field: value}`` of the options given (None: preset or file decides)."""
    return {field: value for field in fields if (value := getattr(args, field, None)) is not None}


def models_overrides(models: str | None, controlnet: str | None) -> dict[str, Any]:
    """ModelsConfig fields set by ``--models`` / ``--controlnet`` (every command's one rule): a
    local ``--models DIR`` holding ``controlnet/`` uses it unless ``--controlnet`` names another."""
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


# Errors ------------------------------------------------------------------------------------------


class CommandError(Exception):
    """An error reported as the command's final line; ``summary`` (what was done) joins ``--json``."""

    exit_code = 1

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = dict(summary or {})


class CLIError(CommandError):
    """A usage or configuration error: exit code 2."""

    exit_code = 2


class RunFailed(CommandError):
    """The work itself failed (a failed flow run, failed images, an outage): exit code 1."""


#: Exit codes (0: done): 1 the work failed, 2 usage or configuration error, 130 interrupted.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _is(err: BaseException, module: str, *names: str) -> bool:
    """isinstance against classes ``module.<name>`` when that module is loaded (else err is none)."""
    classes = [getattr(sys.modules.get(module), name, None) for name in names]
    return any(isinstance(cls, type) and isinstance(err, cls) for cls in classes)


def classify(err: BaseException) -> int:
    """The exit code of an exception: 2 for usage/configuration/bad input, 1 for the rest."""
    if isinstance(err, CommandError):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    # An outage or a full disk: the work failed; bad files found in a dataset too.
    outage = _is(err, "zodi_core.storage", "TransientStorageError", "OutOfSpaceError")
    if outage or _is(err, "zodi_core.datasets.ingest", "IngestError"):
        return EXIT_FAILED
    # Permanent storage errors (credentials, missing bucket, no permission) are configuration;
    # ConfigError, ManifestError, PreflightError are ValueErrors: bad configuration or input.
    if _is(err, "zodi_core.storage", "StorageError") or isinstance(
        err, (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)
    ):
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
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines or not _expected(err):  # "Name: first line", or the name alone
        lines[:1] = [": ".join([type(err).__name__, *lines[:1]])]
    return lines + [n.strip() for n in getattr(err, "__notes__", []) if n.strip()]


def report_failure(
    command: str | None, err: BaseException, as_json: bool, verbose: bool, start: float
) -> int:
    """End a failed command: several problems one per line, then the one error line
    ``zodi COMMAND: error: ...`` (and the ``--json`` line); return the exit code."""
    code = classify(err)
    lines = message_lines(err)
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    if len(lines) > 2:
        print(*(f"  {line}" for line in lines[1:]), sep="\n", file=sys.stderr)
        msg = f"{lines[0].rstrip(':')} (listed above)"
    else:
        msg = " ".join(lines)
    if code == EXIT_FAILED and not verbose and not _expected(err):
        msg += " (rerun with --verbose for the traceback)"
    end = "interrupted" if code == EXIT_INTERRUPTED else f"error: {msg}"
    print(f"zodi {command}: {end}" if command else f"zodi: {end}", file=sys.stderr)
    if as_json:
        summary = getattr(err, "summary", {})
        out = {"command": command, **summary, "ok": False, "exit_code": code, "error": msg}
        print(json.dumps({**out, "seconds": round(time.perf_counter() - start, 3)}, default=str))
    return code


def flow_failure(state: Any, result: Any, summary: dict[str, Any] | None = None) -> CommandError:
    """The one-line error of a flow run that did not complete: the exception that failed it
    (its kind decides the exit code), else the state's name and message."""
    if isinstance(result, BaseException):
        cls = CLIError if classify(result) == EXIT_USAGE else RunFailed
        err = cls("\n".join(message_lines(result)), summary)
        err.__cause__ = result
        return err
    message = (state.message or "").strip()  # a Prefect State: always named
    return RunFailed(f"flow run ended {state.name}" + (f": {message}" if message else ""), summary)


# Demo --------------------------------------------------------------------------------------------


def prepare_demo(workdir: Path, seed: int = 0, log: Callable[[str], None] = lambda _: None):
    """Write the demo's synthetic data under ``workdir``; return ``(dataset roots, models folder)``:
    the committed pocket models, else tiny random-weight models written there (reused)."""
    from zodi_core.datasets.synth import write_synthetic
    from zodi_core.pocket import WEIGHTS_DIR, is_pocket_models
    from zodi_core.transfer.models import write_tiny_models

    log(f"1/3 synthetic data → {workdir / 'data'}")
    data = write_synthetic(workdir / "data", seed=seed)
    if is_pocket_models(WEIGHTS_DIR):
        log(f"2/3 pocket models (trained here on the synthetic world): {WEIGHTS_DIR}")
        return data, WEIGHTS_DIR
    models_dir = workdir / "models" / "tiny-sd15-controlnet"
    if (models_dir / "model_index.json").exists():
        log(f"2/3 tiny models: reusing {models_dir}")
    else:
        log(f"2/3 tiny models → {models_dir}")
        write_tiny_models(models_dir)
    return data, models_dir


def demo_config(workdir: Path, data: dict[str, Any], models_dir: Path, domains: list[str]):
    """The demo's PipelineConfig: synthetic roots, the demo's models, local storage in workdir.
    Pocket models: empty negative prompt (their CFG unconditional branch is the empty caption) and
    T = 10 (at the demo preset's 4 their night scenes come out brown and muddled)."""
    from zodi_core.config import DatasetSpec, PipelineConfig
    from zodi_core.pocket import is_pocket_models

    transfer: dict[str, Any] = {"models": {"base": str(models_dir), "controlnet": None}}
    if is_pocket_models(Path(models_dir)):
        transfer.update(negative_prompt="", num_inference_steps=10)
    acdc = [DatasetSpec(dataset="acdc", root=data["acdc"], condition=d, split="val")
            for d in domains if d != "game"]  # fmt: skip
    gta5 = [DatasetSpec(dataset="gta5", root=data["gta5"])] if "game" in domains else []
    return PipelineConfig.preset(
        "demo",
        source=DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="train"),
        source_val=DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="val"),
        targets=acdc + gta5,
        domains=domains,
        storage={"root": str(workdir / "artifacts")},
        transfer=transfer,
    )


# Prefect -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def prefect_session(workdir: Path | None = None, verbose: bool = False) -> Iterator[None]:
    """Settings for a Prefect-backed command, set before Prefect reads them, restored after (a
    user's own setting wins). The ephemeral server gets 120 s (Prefect's 20 s is too short on a busy
    machine); with ``workdir`` (the demo) Prefect's database and results live there, so a rerun
    finds the cache records; unless ``verbose``, console logs and warnings are muted."""
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
    with contextlib.ExitStack() as restore:
        for key in env.keys() - os.environ.keys():
            os.environ[key] = env[key]
            restore.callback(os.environ.pop, key, None)
        if not verbose:
            restore.enter_context(warnings.catch_warnings(action="ignore"))
            for handler in _console_handlers():
                restore.callback(handler.setLevel, handler.level)
                handler.setLevel(logging.CRITICAL + 1)
        yield


def _console_handlers() -> set[logging.Handler]:
    """Every console log handler, whatever configured it (Prefect's API handler keeps the run
    logs; handlers made during the run, mmengine's, keep their level)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    return {
        h
        for lg in [logging.root, *logging.Logger.manager.loggerDict.values()]
        for h in getattr(lg, "handlers", ())  # a PlaceHolder has none
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    }
