"""One storage interface over local folders and S3 (``s3://bucket/prefix``); writes are atomic.

``base``: the interface, keys, errors; ``local``; ``s3``; ``uri``: open a root, URI helpers.
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
    delete,
    exists,
    join_uri,
    open_storage,
    read_bytes,
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
    "delete",
    "exists",
    "join_uri",
    "open_storage",
    "read_bytes",
    "split_uri",
    "url_for",
    "use_options",
    "write_bytes",
]
