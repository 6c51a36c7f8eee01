"""The ``zodi`` command line: one module per group of subcommands, each with ``add_parsers``.

A command's ``func(args)`` returns a JSON-able summary (``--json`` prints it). Heavy libraries are
imported inside ``func`` (``zodi --help`` stays fast); Prefect too, after its settings are set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

# One module per group of subcommands. To add a group: one import here, one entry below.
from zodi_cli import artifacts, data, deploy, models, pipeline, pocket, quality, seg, transfer
from zodi_cli._common import CLIError, CommandError, add_options, report_failure, shared
from zodi_core import __version__

#: Subcommand modules, in help order (pipeline and deploy hold the Prefect-backed commands).
COMMAND_MODULES = (data, transfer, quality, pocket, models, artifacts, seg, pipeline, deploy)


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised (one line, exit 2) instead of printed with the usage."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message} (see `{self.prog} --help`)") from None


def build_parser() -> argparse.ArgumentParser:
    parent = _Parser(add_help=False)
    add_options(parent, shared("--json", "-v --verbose"))
    parser = _Parser(
        prog="zodi",
        description="ZoDi: zero-shot domain adaptation for semantic segmentation "
        "with diffusion-based image transfer.",
        epilog="Exit codes: 0 done; 1 the work failed (a failed run or image, bad data, a "
        "storage outage); 2 the command line or configuration is wrong. A failure ends with one "
        "line `zodi COMMAND: error: ...`; --verbose adds the logs and the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"zodi {__version__}")
    add_options(parser, shared("-v --verbose", default=False))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parsers(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``zodi`` command; return its exit code (0 done, 1 failed, 2 usage/config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CommandError as err:
        commands = next(a for a in parser._actions if a.dest == "command").choices
        command = next((a for a in argv if a in commands), None)
        return report_failure(command, err, "--json" in argv, False, start)  # no traceback
    args.argv = argv  # `zodi train --gpus N` runs the same command line in each process
    try:
        summary = args.func(args)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - every failure: one line
        return report_failure(args.command, err, args.json, args.verbose, start)
    if args.json:
        out = {"command": args.command, "ok": True, **summary}
        print(json.dumps({**out, "seconds": round(time.perf_counter() - start, 3)}, default=str))
    return 0
