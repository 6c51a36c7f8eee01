"""S3 backend of :class:`zodi_core.storage.Storage` (AWS S3 or any S3-compatible server).

Credentials come from the AWS chain and are never read, logged or written here. Retries are
botocore's "standard" mode with :data:`MAX_ATTEMPTS`: a server that stays down is retried 53 s on
average, at most 106 s, outlasting a ~10 s gateway restart. What still fails is transient when
botocore's checkers call it retryable (Prefect retries it), else permanent (fails at once).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

from zodi_core.storage.base import (
    PermanentStorageError,
    Storage,
    TransientStorageError,
    _check_key,
)
from zodi_core.storage.local import os_error, write_atomic

#: Object metadata key holding the hex SHA-256 of the object's bytes (``x-amz-meta-sha256``).
SHA256_META = "sha256"

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                     "ExpiredToken", "TokenRefreshRequired", "InvalidClientTokenId"}  # fmt: skip
_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}

#: Attempts per request, the first included (botocore "standard" retries; see the module doc).
MAX_ATTEMPTS = 14
#: Seconds to open a connection: an address that does not answer fails in seconds, not minutes.
CONNECT_TIMEOUT = 3.0
#: Seconds to wait for a response on an open connection (a 16 MiB part included).
READ_TIMEOUT = 60.0
#: The longest life of a presigned URL: Signature Version 4 refuses more than 7 days.
PRESIGN_MAX_S = 7 * 24 * 3600


def _sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _credentials_identity() -> str:
    """A digest of the credential variables, so that changed credentials get a new client."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
             "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")  # fmt: skip
    blob = "\0".join(os.environ.get(n, "") for n in names)
    return hashlib.sha256(blob.encode()).hexdigest()


@functools.cache
def _shared_client(
    endpoint_url: str | None, region: str | None, credentials: str, max_attempts: int, **timeouts
) -> Any:
    """One boto3 client per arguments, shared: clients are thread-safe and cost ~50 ms to build."""
    import boto3
    from botocore.config import Config

    # S3-compatible servers on an IP address cannot serve virtual-host buckets, and older ones
    # (Ceph 16) predate the CRC32 checksums botocore now adds by default.
    compatible = dict(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        # Requests are signed with SigV4 anyway; this makes presigned URLs SigV4 too (botocore
        # still presigns with the legacy SigV2 by default).
        signature_version="s3v4",
        **timeouts,
        **(compatible if endpoint_url else {}),
    )
    session = boto3.session.Session(region_name=region)
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _retryable(response: dict, status: int | None) -> bool:
    """Whether botocore's standard retry mode retries this error response (as it just did)."""
    from botocore.retries import standard

    context = standard.RetryContext(
        1, parsed_response=response, http_response=SimpleNamespace(status_code=status)
    )
    checkers = (
        standard.TransientRetryableChecker(),
        standard.ThrottledRetryableChecker(),
        standard.ThrottlingStatusCodeChecker(),
    )
    return any(c.is_retryable(context) for c in checkers)


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``.

    Atomic: a PUT is atomic and a multipart upload invisible until completed; a process killed
    mid-upload leaves parts that cost storage until a lifecycle rule
    (``AbortIncompleteMultipartUpload``) removes them. Every put stores the bytes' SHA-256 as
    metadata (small puts also send ``Content-MD5``); every read checks it (objects written by
    other tools have none and are read unchecked). ``max_attempts=1`` turns retries off (a
    preflight that must answer at once); ``client`` is a ready boto3 client (tests).
    """

    def __init__(
        self,
        root: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        multipart_threshold: int = 64 << 20,
        multipart_chunksize: int = 16 << 20,
        max_concurrency: int = 4,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        client: Any = None,
    ) -> None:
        root = str(root)
        bucket, _, prefix = root.removeprefix("s3://").partition("/")
        if not root.startswith("s3://") or not bucket:
            raise PermanentStorageError(
                f"S3 root {root!r}: expected s3://bucket[/prefix] (no bucket name found)"
            )
        self.bucket = bucket
        self.prefix = _check_key(prefix) if prefix.strip("/") else ""
        self.root = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Without an explicit endpoint, boto3's standard variables may name one (read, never set).
        self.endpoint_url = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        self.region = region
        self.transfer = dict(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
        )
        self._timeouts = dict(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.max_attempts = max_attempts
        self._client = client
        self._bucket_seen = False  # head_bucket answered once: a 404 now means a missing key

    def __repr__(self) -> str:
        return (
            f"S3Storage({self.root!r}, endpoint_url={self.endpoint_url!r}, region={self.region!r})"
        )

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use."""
        if self._client is None:
            self._client = _shared_client(
                self.endpoint_url, self.region, _credentials_identity(), self.max_attempts,
                **self._timeouts,
            )  # fmt: skip
        return self._client

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(**self.transfer)

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _obj(self, key: str) -> dict[str, str]:
        """The Bucket and Key arguments of a request on ``key``."""
        return {"Bucket": self.bucket, "Key": self._key(key)}

    def _error(self, exc: BaseException, key: str | None, action: str) -> Exception:
        """Translate a boto3 error into FileNotFoundError or a transient or permanent error."""
        import botocore.exceptions as bx

        uri = self.uri(key) if key else self.root
        failed, where = f"{uri}: {action} failed", self.endpoint_url or "the AWS S3 endpoint"
        # s3transfer wraps the ClientError of a failed part in its own error (S3UploadFailedError,
        # RetriesExceededError.last_exception): find the cause.
        chain: list[BaseException] = []
        link: BaseException | None = exc
        while link is not None and link not in chain:
            chain.append(link)
            link = getattr(link, "last_exception", None) or link.__cause__ or link.__context__
        cause = next((e for e in chain if isinstance(e, bx.ClientError | bx.BotoCoreError)), None)
        if cause is None:
            os_err = next((e for e in chain if isinstance(e, OSError)), None)
            if os_err is None:
                return PermanentStorageError(f"{failed}: {exc}")
            return os_error(os_err, uri, action)
        # botocore's own errors, the first class that matches decides: (classes, kind, advice).
        for classes, kind, advice in (
            (bx.NoCredentialsError | bx.PartialCredentialsError, PermanentStorageError,
             "no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
             "AWS_PROFILE / ~/.aws/credentials)"),
            (bx.CredentialRetrievalError, TransientStorageError, f"the AWS credentials could not "
             f"be fetched ({cause}); retry later, or check the credential provider"),
            (bx.SSLError, PermanentStorageError, f"TLS with {where} failed ({cause}); check "
             "endpoint_url (http:// or https://) and the server's certificate"),
            (bx.ConnectionError | bx.HTTPClientError, TransientStorageError,
             f"cannot reach {where} ({cause}) after {self.max_attempts} attempt(s); check that the "
             "server is up and endpoint_url is right, then rerun"),
            # A body cut or damaged in transit may pass; any other botocore error will not.
            (bx.IncompleteReadError | bx.ChecksumError, TransientStorageError, str(cause)),
            (bx.BotoCoreError, PermanentStorageError, str(cause)),
        ):  # fmt: skip
            if isinstance(cause, classes):
                return kind(f"{failed}: {advice}")
        err = cause.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = " ".join(str(err.get("Message") or code or status).split())
        if code in _MISSING_KEY_CODES and key is not None:
            return FileNotFoundError(f"{uri}: no such object")
        if code == "NoSuchBucket" or code in _MISSING_KEY_CODES:  # a bare 404 of a bucket request
            return PermanentStorageError(
                f"{failed}: bucket {self.bucket!r} does not exist at {where}; create it or fix the "
                "storage root"
            )
        if code in _CREDENTIAL_CODES:
            return PermanentStorageError(
                f"{failed}: the server rejected the credentials ({code}); check "
                f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the AWS profile) for {where}"
            )
        if code in _DENIED_CODES or status == 403:
            return PermanentStorageError(
                f"{failed}: access denied ({code or status}); the credentials are wrong or lack "
                f"permission on bucket {self.bucket!r}; check AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY and the bucket policy"
            )
        if _retryable(cause.response, status):
            return TransientStorageError(
                f"{failed}: the server is busy or failing ({code or status}: {message}) after "
                f"{self.max_attempts} attempt(s); retry later"
            )
        return PermanentStorageError(f"{failed}: {code or status}: {message}")

    @contextlib.contextmanager
    def _errors(self, key: str | None, action: str, missing_ok: bool = False) -> Iterator[None]:
        """Raise a boto3 error of the block as :meth:`_error`'s (a missing key: none if
        ``missing_ok``)."""
        try:
            yield
        except Exception as exc:
            err = self._error(exc, key, action)
            if not (missing_ok and isinstance(err, FileNotFoundError)):
                raise err from None

    def _head(self, key: str) -> dict | None:
        """HEAD the object; None when it is missing (after checking that the bucket exists)."""
        with self._errors(key, "HEAD", missing_ok=True):
            return self.client.head_object(**self._obj(key))
        # A HEAD answers a bare 404 both for a missing key and for a missing bucket.
        if not self._bucket_seen:
            with self._errors(None, "HEAD bucket"):
                self.client.head_bucket(Bucket=self.bucket)
            self._bucket_seen = True
        return None

    def _verify(self, key: str, got: str, meta: dict) -> None:
        want = (meta or {}).get(SHA256_META)
        if want and want != got:
            raise PermanentStorageError(
                f"{self.uri(key)}: checksum mismatch on read-back (stored sha256 {want}, "
                f"read {got}); the object is corrupt: write it again"
            )

    # -- Storage interface --------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> str:
        """Upload ``data`` (one atomic PUT, or multipart above the threshold); return the URI."""
        data = bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        if len(data) >= self.transfer["multipart_threshold"]:
            return self.put_stream(key, io.BytesIO(data), sha256)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        with self._errors(key, "PUT"):
            self.client.put_object(
                **self._obj(key), Body=data, ContentMD5=md5, Metadata={SHA256_META: sha256}
            )
        return self.uri(key)

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        """Upload a local file, streamed, in parts above the threshold; return the URI."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file to upload to {self.uri(key)}")
        with open(path, "rb") as f:
            return self.put_stream(key, f, _sha256_file(path))

    def put_stream(self, key: str, fileobj: BinaryIO, sha256: str | None = None) -> str:
        """Upload a binary stream (multipart above the threshold), storing ``sha256`` if given."""
        meta = {SHA256_META: sha256} if sha256 else {}
        with self._errors(key, "upload"):
            self.client.upload_fileobj(
                fileobj,
                self.bucket,
                self._key(key),
                ExtraArgs={"Metadata": meta},
                Config=self._transfer_config(),
            )
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        """Read an object whole, checking its stored SHA-256; FileNotFoundError if missing."""
        with self._errors(key, "GET"):
            resp = self.client.get_object(**self._obj(key))
            data = resp["Body"].read()
        self._verify(key, hashlib.sha256(data).hexdigest(), resp.get("Metadata", {}))
        return data

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        """Download to ``path`` (ranged parts above the threshold), check the SHA-256, then rename
        into place, so ``path`` never holds a partial or corrupt download."""
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(f"{self.uri(key)}: no such object")

        def download(f: BinaryIO) -> None:
            with self._errors(key, "download"):
                self.client.download_fileobj(
                    self.bucket, self._key(key), f, Config=self._transfer_config()
                )

        # If the object is replaced mid-download, the parts mix two versions: the SHA-256 check
        # (against the metadata of the HEAD above) catches that before the rename.
        meta = head.get("Metadata", {})
        dst = Path(path)
        write_atomic(
            dst, download, "download", lambda tmp: self._verify(key, _sha256_file(tmp), meta)
        )
        return dst

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """``{key: size}`` under ``prefix`` (as :meth:`list`), from ListObjectsV2's ``Size``."""
        rel = _check_key(prefix) if prefix else ""
        query = self._key(rel) if rel else (f"{self.prefix}/" if self.prefix else "")
        start = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(None, "LIST"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=query
            )
            found = {o["Key"][start:]: int(o["Size"]) for p in pages for o in p.get("Contents", [])}
        return {k: n for k, n in found.items() if not rel or k == rel or k.startswith(f"{rel}/")}

    def url_for(self, key: str, expires_s: int) -> str:
        """A presigned GET URL valid ``expires_s`` seconds (1 to 7 days), signed locally (the
        object is not checked); temporary credentials end it when they expire."""
        if not 1 <= int(expires_s) <= PRESIGN_MAX_S:
            raise PermanentStorageError(
                f"presigned URL expiry: expected 1 to {PRESIGN_MAX_S} seconds (7 days, the "
                f"longest Signature Version 4 allows), received {expires_s}"
            )
        with self._errors(key, "presign"):
            return self.client.generate_presigned_url(
                "get_object", Params=self._obj(key), ExpiresIn=int(expires_s)
            )

    def delete(self, key: str) -> None:
        """Delete an object; a missing key is not an error, a missing bucket is."""
        with self._errors(key, "DELETE", missing_ok=True):
            self.client.delete_object(**self._obj(key))
