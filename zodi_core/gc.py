"""Garbage collection of generations: images and shard manifests no paired manifest uses.

Images are content-addressed, so a changed setting writes beside the old ones; the paired
manifests of a root (and its ``proxy/`` root) name the generations in use. Deleting is safe: a
rerun whose cache record points at deleted outputs recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zodi_core import layout, manifest, storage


@dataclass
class Garbage:
    """What :func:`find_garbage` found under one artifact root."""

    root: str
    referenced_images: int = 0
    images: list[str] = field(default_factory=list)
    shard_manifests: list[str] = field(default_factory=list)

    @property
    def uris(self) -> list[str]:
        return [*self.images, *self.shard_manifests]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "referenced_images": self.referenced_images,
            "unreferenced_images": len(self.images),
            "unreferenced_shard_manifests": len(self.shard_manifests),
        }


def find_garbage(root: str) -> list[Garbage]:
    """The unreferenced generations under ``root`` and its proxy root (nothing is deleted)."""
    found = []
    proxy = layout.proxy_root(root)  # looked at only when it has paired manifests
    has_proxy = any(True for _ in storage.open_storage(proxy).list(layout.PAIRED))
    for r in [root, proxy] if has_proxy else [root]:
        store = storage.open_storage(r)
        tables = [
            manifest.read_manifest(store.uri(k), "transfer")
            for k in store.list(layout.PAIRED)
            if k.endswith(".parquet")
        ]
        referenced = {u for t in tables for u in t.column("generated_uri").to_pylist() if u}
        digests = {d for t in tables for d in t.column("config_digest").to_pylist()}
        images = [store.uri(k) for k in store.list(layout.IMAGES) if k.endswith(".png")]
        shards = [k for k in store.list(layout.SHARDS) if k.endswith(".parquet")]
        unused = [store.uri(k) for k in shards if layout.shard_generation(k) not in digests]
        found.append(
            Garbage(r, len(referenced), [u for u in images if u not in referenced], unused)
        )
    return found


def delete_garbage(found: list[Garbage]) -> int:
    """Delete what :func:`find_garbage` found; return the number of objects deleted."""
    uris = [uri for garbage in found for uri in garbage.uris]
    for uri in uris:
        storage.delete(uri)
    return len(uris)
