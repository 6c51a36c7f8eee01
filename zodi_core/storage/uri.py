"""Open the storage of a root URI, and read or write single objects by URI.

S3 options go to each call or, for a flow run, to :func:`use_options` (a context variable, never
``os.environ``); without either, boto3's own configuration applies.
"""

from __future__ import annotations

import inspect
import os
from contextlib import ExitStack
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from zodi_core.storage.base import PermanentStorageError, Storage, _check_key
from zodi_core.storage.local import LocalStorage
from zodi_core.storage.s3 import S3Storage

_OPTIONS: ContextVar[dict[str, Any]] = ContextVar("zodi_storage_options", default={})  # noqa: B039


def use_options(**options: Any) -> ExitStack:
    """Make these S3 options (:class:`~zodi_core.storage.s3.S3Storage`'s arguments) the default
    of the current context, a flow run and its tasks; as ``with``, of a block. ``None`` is dropped;
    an argument given to :func:`open_storage` wins."""
    allowed = set(inspect.signature(S3Storage).parameters) - {"root", "client"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"use_options: unknown option(s) {unknown}; expected {sorted(allowed)}")
    scope = ExitStack()  # as a context manager, it restores the previous options
    scope.callback(
        _OPTIONS.reset, _OPTIONS.set({k: v for k, v in options.items() if v is not None})
    )
    return scope


def open_storage(root: str | os.PathLike, **options: Any) -> Storage:
    """Open the storage rooted at ``root``: ``s3://bucket/prefix`` or a local folder.

    ``options`` are S3Storage's (ignored locally); ``None`` falls back to :func:`use_options`."""
    root = str(root)
    if root.startswith("s3://"):
        given = {k: v for k, v in options.items() if v is not None}
        return S3Storage(root, **{**_OPTIONS.get(), **given})
    if "://" in root and not root.startswith("file://"):
        raise PermanentStorageError(
            f"storage root {root!r}: expected a local folder or s3://bucket/prefix"
        )
    return LocalStorage(root.removeprefix("file://"))


def split_uri(uri: str) -> tuple[str, str]:
    """Split a full object URI into (parent root, object name)."""
    uri = str(uri)
    if uri.startswith("s3://"):
        head, _, name = uri.rstrip("/").rpartition("/")
        if head == "s3:/" or not name:
            raise PermanentStorageError(f"{uri!r}: expected s3://bucket/key")
        return head, name
    p = Path(uri.removeprefix("file://"))
    return str(p.parent), p.name


def read_bytes(uri: str, **options: Any) -> bytes:
    root, name = split_uri(uri)
    return open_storage(root, **options).get_bytes(name)


def write_bytes(uri: str, data: bytes, **options: Any) -> str:
    root, name = split_uri(uri)
    return open_storage(root, **options).put_bytes(name, data)


def exists(uri: str, **options: Any) -> bool:
    root, name = split_uri(uri)
    return open_storage(root, **options).exists(name)


def delete(uri: str, **options: Any) -> None:
    root, name = split_uri(uri)
    open_storage(root, **options).delete(name)


def url_for(uri: str, expires_s: int, **options: Any) -> str | None:
    """A browser-loadable URL of an object (see :meth:`Storage.url_for`)."""
    root, name = split_uri(uri)
    return open_storage(root, **options).url_for(name, expires_s)


def join_uri(root: str, *parts: str) -> str:
    root = str(root).rstrip("/")
    return "/".join([root, *(_check_key(p) for p in parts)])
