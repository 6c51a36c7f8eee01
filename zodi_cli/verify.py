"""``zodi verify``: do the generated images under a root hold the bytes their manifests recorded?"""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import RunFailed

#: Damaged images listed one per line before the error line (the JSON summary has them all).
SHOWN = 20


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify",
        parents=[parent],
        help="check every generated image against its manifest's size and SHA-256",
        description="Read every generated image that a transfer manifest under ROOT names (shard "
        "and paired manifests, the proxy's, zodi transfer outputs) and compare it with the "
        "size and SHA-256 its row recorded. Exit code 1 when an image is missing or damaged; "
        "--delete removes the damaged ones, so the next run (zodi pipeline, zodi transfer) "
        "regenerates them.",
    )
    p.add_argument("root", metavar="ROOT", help="artifact root: folder or s3://bucket/prefix")
    p.add_argument(
        "--delete", action="store_true",
        help="delete the damaged images (the next run regenerates them)",
    )  # fmt: skip
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.integrity import verify_root

    report = verify_root(args.root, delete=args.delete)
    summary = {"root": args.root, **report.summary()}
    if not report.manifests:
        raise RunFailed(f"{args.root}: no transfer manifest found (nothing to verify)", summary)
    line = (
        f"[verify] {report.images} images in {len(report.manifests)} manifests: "
        f"{report.images - len(report.damaged)} intact ({report.hashed} by SHA-256), "
        f"{len(report.damaged)} missing or damaged"
    )
    print(line)
    if not report.damaged:
        return summary
    for uri, reason in sorted(report.damaged.items())[:SHOWN]:
        print(f"[verify] {'deleted' if uri in report.deleted else 'damaged'}: {uri}: {reason}")
    if len(report.damaged) > SHOWN:
        print(f"[verify] ... and {len(report.damaged) - SHOWN} more (--json lists them all)")
    then = (
        "rerun the transfer or pipeline to regenerate them"
        if args.delete
        else "rerun with --delete, then rerun the transfer or pipeline to regenerate them"
    )
    raise RunFailed(f"{len(report.damaged)} of {report.images} images missing or damaged; {then}",
                    summary)  # fmt: skip
