"""What every storage backend shares: the :class:`Storage` interface, keys and errors.

Errors are :class:`StorageError`: transient (worth a retry) or permanent (fail fast); a missing
object is a :class:`FileNotFoundError` naming its URI.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath


class StorageError(RuntimeError):
    """A storage operation failed; the message names the location and what to fix."""


class TransientStorageError(StorageError):
    """A failure that may pass by itself (network, timeout, server busy): retry later."""


class PermanentStorageError(StorageError):
    """A failure that retrying will not fix (credentials, bucket, permission, space, bad key)."""


class OutOfSpaceError(PermanentStorageError):
    """No space left (disk, quota, file-size limit): the work failed (``zodi`` exits 1)."""


def _check_key(key: str) -> str:
    """Normalise a relative key and refuse anything that escapes the root."""
    if not isinstance(key, str) or not key:
        raise PermanentStorageError(
            f"storage key: expected a non-empty relative path, received {key!r}"
        )
    # A drive only when followed by a separator ("C:/x"): "a:b" is a plain relative key.
    if key.startswith(("/", "\\")) or (len(key) > 2 and key[1] == ":" and key[2] in "/\\"):
        raise PermanentStorageError(
            f"storage key {key!r}: absolute keys are refused; use a relative key"
        )
    parts = PurePosixPath(key.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise PermanentStorageError(f"storage key {key!r}: '..' would escape the storage prefix")
    return "/".join(p for p in parts if p not in ("", "."))


class Storage(ABC):
    """Objects under one root: a local folder or an S3 prefix. Keys are relative POSIX paths."""

    root: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Atomically write ``data`` at ``key``; return its URI."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike) -> str:
        """Atomically upload a local file (streamed, multipart when large); return its URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read an object; raise FileNotFoundError naming the URI if it is missing."""

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        """Download an object to a local path (streamed, atomic); return the path."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def sizes(self, prefix: str = "") -> dict[str, int]:
        """``{key: size in bytes}`` under ``prefix`` from one listing (no request per object).

        ``prefix`` is a folder or one key: ``"a"`` matches ``a`` and ``a/...`` but not ``ab``."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` (as :meth:`sizes`), sorted."""
        yield from sorted(self.sizes(prefix))

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing key is not an error."""

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{_check_key(key)}"

    def url_for(self, key: str, expires_s: int) -> str | None:
        """An HTTP(S) URL a browser can GET the object with for ``expires_s`` seconds, or None
        when the backend has none (a local folder: read the bytes instead)."""
        return None
