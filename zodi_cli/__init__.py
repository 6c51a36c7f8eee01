"""The ``zodi`` command line: one program, one module per group of subcommands.

Each module in :data:`COMMAND_MODULES` has ``add_parsers(subparsers, parent)``, which registers its
subcommands with ``set_defaults(func=...)``; ``func(args)`` does the work and returns a JSON-able
summary dict (paths written, counts). Modules import heavy libraries inside ``func``, so that
``zodi --help`` stays fast. ``--json`` ends the output with that summary on one line, with
``seconds`` added.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence

# One module per group of subcommands. To add a group: one import here, one entry below.
from zodi_cli import data, deploy, gc, models, pipeline, pocket, quality, seg, transfer, verify
from zodi_cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CLIError,
    CommandError,
    RunFailed,
    _expected,
    classify,
    message_lines,
)

#: Subcommand modules, in help order (pipeline and deploy hold the Prefect-backed commands).
COMMAND_MODULES = (
    data,
    transfer,
    quality,
    pocket,
    models,
    gc,
    verify,
    seg,
    pipeline,
    deploy,
)

__all__ = ["CLIError", "COMMAND_MODULES", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised (one line, exit 2) instead of printed with the usage."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message} (see `{self.prog} --help`)", {"usage": True}) from None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("zodi")
    except Exception:  # not installed (running from a checkout)
        from zodi_core import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", help="end with one line of JSON summarising what was done "
        "(also on failure: ok=false and the error)",
    )  # fmt: skip
    parent.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="show library and Prefect logs, and the traceback of an error",
    )  # fmt: skip
    parser = _Parser(
        prog="zodi",
        description="ZoDi: zero-shot domain adaptation for semantic segmentation "
        "with diffusion-based image transfer.",
        epilog="Exit codes: 0 done; 1 the work failed (a failed run or image, bad data, a "
        "storage outage); 2 the command line or configuration is wrong. A failure ends with one "
        "line `zodi COMMAND: error: ...`; --verbose adds the logs and the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"zodi {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="show library and Prefect logs, and the traceback of an error",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parsers(sub, parent)
    return parser


def _command_of(argv: Sequence[str], parser: argparse.ArgumentParser) -> str | None:
    action = next(a for a in parser._actions if a.dest == "command")
    return next((a for a in argv if a in action.choices), None)


def _fail(
    command: str | None, err: BaseException, as_json: bool, verbose: bool, start: float
) -> int:
    code = classify(err)
    lines = message_lines(err)
    if verbose and not (isinstance(err, CommandError) and "usage" in err.summary):
        traceback.print_exception(err, file=sys.stderr)
    if len(lines) > 2:  # several problems: one per line, then the one error line
        for line in lines[1:]:
            print(f"  {line.strip()}", file=sys.stderr)
        msg = f"{lines[0].rstrip(':')} (listed above)"
    else:
        msg = " ".join(line.strip() for line in lines)
    if code == EXIT_FAILED and not verbose and not _expected(err):
        msg += " (rerun with --verbose for the traceback)"
    prog = f"zodi {command}" if command else "zodi"
    if code == EXIT_INTERRUPTED:
        print(f"{prog}: interrupted", file=sys.stderr)
    else:
        print(f"{prog}: error: {msg}", file=sys.stderr)
    if as_json:
        summary = dict(getattr(err, "summary", {}) or {})
        summary.pop("usage", None)
        out = {"command": command, **summary, "ok": False, "exit_code": code, "error": msg}
        out["seconds"] = round(time.perf_counter() - start, 3)
        print(json.dumps(out, default=str))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``zodi`` command; return its exit code (0 done, 1 failed, 2 usage/config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    parser = build_parser()
    as_json = "--json" in argv
    verbose = "--verbose" in argv or "-v" in argv
    try:
        args = parser.parse_args(argv)
    except CommandError as err:
        return _fail(_command_of(argv, parser), err, as_json, verbose, start)
    verbose = bool(getattr(args, "verbose", False))
    args.verbose = verbose
    try:
        summary = args.func(args) or {}
    except BaseException as err:  # noqa: BLE001 - every failure ends with one line
        if isinstance(err, SystemExit):
            raise
        return _fail(args.command, err, args.json, verbose, start)
    if not isinstance(summary, dict):
        summary = {}
    exit_code = int(summary.pop("exit_code", 0))
    error = summary.pop("error", None)
    if exit_code:
        err = RunFailed(str(error or f"{args.command} failed"), summary)
        return _fail(args.command, err, args.json, verbose, start)
    if args.json:
        out = {"command": args.command, "ok": True, **summary}
        out["seconds"] = round(time.perf_counter() - start, 3)
        print(json.dumps(out, default=str))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
