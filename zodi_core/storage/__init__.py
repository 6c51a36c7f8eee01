"""One storage interface over local folders and S3 (``s3://bucket/prefix``).

Every stage reads and writes artifacts through a :class:`Storage` opened on a root URI, or through
the URI-level helpers (:func:`read_bytes`, :func:`write_bytes`, ...) that open one on the fly.
Writes are atomic: no reader ever sees a half-written object.

Modules: ``base`` (the interface, keys, errors), ``local`` (folders), ``s3`` (S3 and compatible
servers: retries, error classification, the shared client), ``uri`` (opening a root, options).
"""

from zodi_core.storage.base import (
    OutOfSpaceError,
    PermanentStorageError,
    Storage,
    StorageError,
    TransientStorageError,
)
from zodi_core.storage.local import LocalStorage
from zodi_core.storage.s3 import S3Storage
from zodi_core.storage.uri import (
    current_options,
    delete,
    exists,
    join_uri,
    open_storage,
    read_bytes,
    sha256_bytes,
    split_uri,
    url_for,
    use_options,
    write_bytes,
)

__all__ = [
    "LocalStorage",
    "OutOfSpaceError",
    "PermanentStorageError",
    "S3Storage",
    "Storage",
    "StorageError",
    "TransientStorageError",
    "current_options",
    "delete",
    "exists",
    "join_uri",
    "open_storage",
    "read_bytes",
    "sha256_bytes",
    "split_uri",
    "url_for",
    "use_options",
    "write_bytes",
]
