"""One storage interface over local folders and S3 (``s3://bucket/prefix``).

Every stage reads and writes artifacts through a :class:`Storage` opened on a root URI, or through
the URI-level helpers (:func:`read_bytes`, :func:`write_bytes`, ...) that open one on the fly.
Writes are atomic: no reader ever sees a half-written object.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO


class StorageError(RuntimeError):
    """A storage operation failed; the message names the location and what to fix."""


def _check_key(key: str) -> str:
    """Normalise a relative key and refuse anything that escapes the root."""
    if not isinstance(key, str) or not key:
        raise StorageError(f"storage key: expected a non-empty relative path, received {key!r}")
    if key.startswith("/") or key.startswith("\\") or (len(key) > 1 and key[1] == ":"):
        raise StorageError(f"storage key {key!r}: absolute keys are refused; use a relative key")
    parts = PurePosixPath(key.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise StorageError(f"storage key {key!r}: '..' would escape the storage prefix")
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
        """Download an object to a local path (streamed); return the path."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` (relative to the root), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing key is not an error."""

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{_check_key(key)}"

    def local_path(self, key: str) -> Path | None:
        """A local path to read the object directly, when the backend is local."""
        return None

    def get_bytes_checked(self, key: str, sha256: str) -> bytes:
        data = self.get_bytes(key)
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise StorageError(f"{self.uri(key)}: checksum mismatch (expected {sha256}, got {got})")
        return data


class LocalStorage(Storage):
    """A local folder. Atomic publish: write to a temporary file beside the target, then rename."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.path = Path(root).expanduser().resolve()
        self.root = str(self.path)

    def _p(self, key: str) -> Path:
        return self.path / _check_key(key)

    def local_path(self, key: str) -> Path:
        return self._p(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        target = self._p(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(target)

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        target = self._p(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as dst, open(path, "rb") as src:
                shutil.copyfileobj(src, dst, 8 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(target)

    def get_bytes(self, key: str) -> bytes:
        p = self._p(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: no such object") from None

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        src = self._p(key)
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such object")
        dst = Path(path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return dst

    def exists(self, key: str) -> bool:
        return self._p(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self._p(prefix) if prefix else self.path
        if base.is_file():
            yield _check_key(prefix)
            return
        if not base.is_dir():
            return
        keys = []
        for p in base.rglob("*"):
            if p.is_file() and not p.name.endswith(".part"):
                keys.append(p.relative_to(self.path).as_posix())
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        self._p(key).unlink(missing_ok=True)

    def open_read(self, key: str) -> BinaryIO:
        return open(self._p(key), "rb")


def open_storage(root: str | os.PathLike, **options) -> Storage:
    """Open the storage rooted at ``root``: ``s3://bucket/prefix`` or a local folder.

    ``options`` (S3 only): ``endpoint_url``, ``region``.
    """
    root = str(root)
    if root.startswith("s3://"):
        from zodi_core.s3 import S3Storage

        return S3Storage(root, **options)
    if "://" in root and not root.startswith("file://"):
        raise StorageError(f"storage root {root!r}: expected a local folder or s3://bucket/prefix")
    return LocalStorage(root.removeprefix("file://"))


def use_endpoint(endpoint_url: str | None) -> None:
    """Make ``endpoint_url`` the S3 endpoint of this process (an S3-compatible server).

    Sets ``AWS_ENDPOINT_URL_S3`` (the standard variable, also read by boto3 itself) unless the
    environment already names one, so that every stage and every URI-level helper reaches it.
    """
    if endpoint_url:
        os.environ.setdefault("AWS_ENDPOINT_URL_S3", endpoint_url)


def split_uri(uri: str) -> tuple[str, str]:
    """Split a full object URI into (parent root, object name)."""
    uri = str(uri)
    if uri.startswith("s3://"):
        head, _, name = uri.rstrip("/").rpartition("/")
        if head == "s3:/" or not name:
            raise StorageError(f"{uri!r}: expected s3://bucket/key")
        return head, name
    p = Path(uri.removeprefix("file://"))
    return str(p.parent), p.name


def read_bytes(uri: str, **options) -> bytes:
    root, name = split_uri(uri)
    return open_storage(root, **options).get_bytes(name)


def write_bytes(uri: str, data: bytes, **options) -> str:
    root, name = split_uri(uri)
    return open_storage(root, **options).put_bytes(name, data)


def exists(uri: str, **options) -> bool:
    root, name = split_uri(uri)
    return open_storage(root, **options).exists(name)


def delete(uri: str, **options) -> None:
    root, name = split_uri(uri)
    open_storage(root, **options).delete(name)


def join_uri(root: str, *parts: str) -> str:
    root = str(root).rstrip("/")
    return "/".join([root, *(_check_key(p) for p in parts)])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
