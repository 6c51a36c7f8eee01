"""``zodi verify`` and ``zodi gc``: the generated images under an artifact root, checked against
the bytes their manifests recorded, and those no paired manifest references."""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import RunFailed, command

#: Damaged images listed one per line before the error line (the JSON summary has them all).
SHOWN = 20


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "verify", run_verify,
        "check every generated image against its manifest's size and SHA-256",
        "Read every generated image that a transfer manifest under ROOT names (shard and paired "
        "manifests, the proxy's, zodi transfer outputs) and compare it with the size and SHA-256 "
        "its row recorded. Exit code 1 when an image is missing or damaged; --delete removes the "
        "damaged ones, so the next run (zodi pipeline, zodi transfer) regenerates them.",
        {
            "root": {"metavar": "ROOT", "help": "artifact root: folder or s3://bucket/prefix"},
            "--delete": {"action": "store_true",
                         "help": "delete the damaged images (the next run regenerates them)"},
        },
    )  # fmt: skip
    command(sub, parent, "gc", run_gc,
        "list or delete generated images no paired manifest references",
        "Generated images are keyed by their settings' digest, so a settings change writes "
        "beside the old images instead of over them. This lists, under an artifact root and its "
        "proxy/ root, the images and shard manifests that no paired manifest uses. Nothing is "
        "deleted without --delete. A later rerun recomputes whatever it needs.",
        {
            "root": "artifact root: a folder or s3://bucket/prefix",
            "--delete": {"action": "store_true", "help": "delete what is listed (default: a dry run)"},
        },
    )  # fmt: skip


def run_verify(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.integrity import verify_root

    report = verify_root(args.root, delete=args.delete)
    summary = {"root": args.root, **report.summary()}
    if not report.manifests:
        raise RunFailed(f"{args.root}: no transfer manifest found (nothing to verify)", summary)
    damaged = report.damaged
    print(
        f"[verify] {report.images} images in {len(report.manifests)} manifests: "
        f"{report.images - len(damaged)} intact ({report.hashed} by SHA-256), "
        f"{len(damaged)} missing or damaged"
    )
    if not damaged:
        return summary
    for uri, reason in sorted(damaged.items())[:SHOWN]:
        print(f"[verify] {'deleted' if uri in report.deleted else 'damaged'}: {uri}: {reason}")
    if len(damaged) > SHOWN:
        print(f"[verify] ... and {len(damaged) - SHOWN} more (--json lists them all)")
    then = "" if args.delete else "rerun with --delete, then "
    raise RunFailed(
        f"{len(damaged)} of {report.images} images missing or damaged; {then}rerun the transfer "
        "or pipeline to regenerate them",
        summary,
    )


def run_gc(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.gc import delete_garbage, find_garbage

    found = find_garbage(args.root)
    for uri in (uri for garbage in found for uri in garbage.uris):
        print(uri)
    images = sum(len(g.images) for g in found)
    shards = sum(len(g.shard_manifests) for g in found)
    referenced = sum(g.referenced_images for g in found)
    deleted = delete_garbage(found) if args.delete else 0
    verb = "deleted" if args.delete else "would delete (dry run; --delete to remove)"
    print(
        f"gc {args.root}: {referenced} image(s) referenced; {verb} {images} unreferenced "
        f"image(s) and {shards} shard manifest(s)"
    )
    return {"roots": [g.to_dict() for g in found], "deleted": deleted}
