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
from collections.abc import Sequence

# One module per group of subcommands. To add a group: one import here, one entry below.
from zodi_cli import data, deploy, pipeline, seg, transfer
from zodi_cli._common import CLIError

#: Subcommand modules, in help order (pipeline and deploy hold the Prefect-backed commands).
COMMAND_MODULES = (
    data,
    transfer,
    seg,
    pipeline,
    deploy,
)

__all__ = ["CLIError", "COMMAND_MODULES", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", help="end with one line of JSON summarising what was done"
    )
    parser = argparse.ArgumentParser(
        prog="zodi",
        description="ZoDi: zero-shot domain adaptation for semantic segmentation "
        "with diffusion-based image transfer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parsers(sub, parent)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from zodi_core.config import ConfigError
    from zodi_core.manifest import ManifestError
    from zodi_core.storage import StorageError

    return (CLIError, ConfigError, ManifestError, StorageError, FileNotFoundError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = args.func(args) or {}
    except _user_errors() as err:
        msg = str(err).strip() or type(err).__name__
        print(f"zodi {args.command}: error: {msg}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"command": args.command, "ok": False, "error": msg}))
        return 2
    except KeyboardInterrupt:
        print(f"zodi {args.command}: interrupted", file=sys.stderr)
        return 130
    exit_code = int(summary.pop("exit_code", 0)) if isinstance(summary, dict) else 0
    if getattr(args, "json", False):
        out = {"command": args.command, "ok": exit_code == 0, **summary}
        out["seconds"] = round(time.perf_counter() - start, 3)
        print(json.dumps(out, default=str))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
