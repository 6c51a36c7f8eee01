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
        referenced: set[str] = set()
        digests: set[str] = set()
        for key in store.list(layout.PAIRED):
            if not key.endswith(".parquet"):
                continue
            table = manifest.read_manifest(store.uri(key), "transfer")
            referenced.update(u for u in table.column("generated_uri").to_pylist() if u)
            digests.update(table.column("config_digest").to_pylist())
        garbage = Garbage(root=r, referenced_images=len(referenced))
        garbage.images = [
            store.uri(k)
            for k in store.list(layout.IMAGES)
            if k.endswith(".png") and store.uri(k) not in referenced
        ]
        garbage.shard_manifests = [
            store.uri(k)
            for k in store.list(layout.SHARDS)
            if k.endswith(".parquet") and layout.shard_generation(k) not in digests
        ]
        found.append(garbage)
    return found


def delete_garbage(found: list[Garbage]) -> int:
    """Delete what :func:`find_garbage` found; return the number of objects deleted."""
    n = 0
    for garbage in found:
        for uri in garbage.uris:
            storage.delete(uri)
            n += 1
    return n
