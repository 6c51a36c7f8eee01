"""Local-folder backend of :class:`~zodi_core.storage.base.Storage`: atomic writes (temp file,
fsync, ``os.replace``) and OS errors classified as transient or permanent."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from zodi_core.storage.base import (
    OutOfSpaceError,
    PermanentStorageError,
    Storage,
    StorageError,
    TransientStorageError,
    _check_key,
)

#: errno values that may pass by themselves (network file systems, a busy device).
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EIO EAGAIN EINTR EBUSY ESTALE ETIMEDOUT ECONNRESET ECONNREFUSED ECONNABORTED EHOSTDOWN "
        "EHOSTUNREACH ENETDOWN ENETUNREACH ENETRESET ENOLCK ECOMM"
    ).split()
    if hasattr(errno, name)
)

#: errno values of a full disk: :class:`OutOfSpaceError`.
OUT_OF_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

_ADVICE = {
    errno.ENOSPC: "no space left on the device: free space or choose another storage root",
    errno.EDQUOT: "disk quota exceeded: free space or choose another storage root",
    errno.EFBIG: "file too large for the file system or the process's file-size limit (ulimit -f)",
    errno.EACCES: "permission denied: check the folder's owner and mode",
    errno.EPERM: "operation not permitted: check the folder's owner and mode",
    errno.EROFS: "read-only file system: choose a writable storage root",
    errno.ENAMETOOLONG: "file name too long: use a shorter storage root or key",
    errno.EISDIR: "a folder is in the way of the object: remove it or choose another key",
    errno.ENOTDIR: "a file is in the way of the object's folder: remove it or choose another key",
}


def os_error(err: OSError, where: str | os.PathLike, action: str) -> StorageError:
    """Classify an OSError of a local storage operation into a one-line StorageError."""
    reason = err.strerror or str(err)
    if err.errno in TRANSIENT_ERRNOS or isinstance(err, ConnectionError | TimeoutError):
        return TransientStorageError(f"{where}: {action} failed: {reason}; retry later")
    if err.errno in OUT_OF_SPACE_ERRNOS:
        return OutOfSpaceError(f"{where}: {action} failed: {_ADVICE[err.errno]}")
    return PermanentStorageError(f"{where}: {action} failed: {_ADVICE.get(err.errno, reason)}")


def write_atomic(
    target: Path,
    write: Callable[[BinaryIO], object],
    action: str = "write",
    check: Callable[[Path], object] | None = None,
) -> None:
    """Write ``target`` through ``write(file)`` into a temp file beside it, fsync, then rename.

    ``check(temp_path)`` runs before the rename (a download's checksum). A FileNotFoundError
    without errno is one already translated (a missing object): raised as is.
    """
    # Named ".<name>.<random>.part" so that listings skip it; created with mode 0o666 minus the
    # umask, as open() creates a file (tempfile.mkstemp forces 0600, which a rename would publish).
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise os_error(err, target, action) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not (isinstance(err, FileNotFoundError) and not err.errno):
            raise os_error(err, target, action) from err
        raise


def _copy_file(src: Path, target: Path) -> Path:
    def copy(f: BinaryIO) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, 8 << 20)

    write_atomic(target, copy)
    return target


class LocalStorage(Storage):
    """A local folder (also a mounted network file system)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.path = Path(root).expanduser().resolve()
        self.root = str(self.path)

    def _p(self, key: str) -> Path:
        return self.path / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        target = self._p(key)
        write_atomic(target, lambda f: f.write(data))
        return str(target)

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        src = Path(path)
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such file to copy to {self.uri(key)}")
        return str(_copy_file(src, self._p(key)))

    def get_bytes(self, key: str) -> bytes:
        p = self._p(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: no such object") from None
        except OSError as err:
            raise os_error(err, p, "read") from err

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        src = self._p(key)
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such object")
        return _copy_file(src, Path(path))

    def exists(self, key: str) -> bool:
        return self._p(key).is_file()

    def sizes(self, prefix: str = "") -> dict[str, int]:
        base = self._p(prefix) if prefix else self.path
        files = [base] if base.is_file() else base.rglob("*")
        out = {}
        for p in files:
            with contextlib.suppress(FileNotFoundError):  # deleted since the listing
                if p.is_file() and not p.name.endswith(".part"):  # .part: a write in progress
                    out[p.relative_to(self.path).as_posix()] = p.stat().st_size
        return out

    def delete(self, key: str) -> None:
        p = self._p(key)
        try:
            p.unlink(missing_ok=True)
        except OSError as err:
            raise os_error(err, p, "delete") from err
