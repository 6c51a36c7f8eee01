"""``zodi gc``: list (and with --delete, remove) generations no paired manifest references."""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import command


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
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
