"""Google Cloud Storage (and the GCS emulators) through google-cloud-storage.

Promises, on top of :mod:`db_backup.storage.base`:

* a file larger than one part goes up as a resumable upload in chunks of
  ``part_size`` bytes (memory stays at one chunk); GCS makes the object
  visible only when the last chunk is accepted, so no partial object is ever
  listed, and an unfinished session simply expires;
* the SDK checks the crc32c the store computed against the crc32c of the
  bytes it sent (small objects: the store's md5 is compared here too);
* the whole-file sha256 of those bytes goes back to the caller.

``gs://bucket/prefix`` URLs use Application Default Credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, ``GOOGLE_CLOUD_PROJECT``), or anonymous
access to ``STORAGE_EMULATOR_HOST`` when that is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from db_backup.errors import ObjectNotFound, PermanentStorageError, StorageError
from db_backup.storage.base import ObjectInfo, UploadReceipt
from db_backup.storage.cloud import (
    MappedReader,
    PrefixedKeys,
    TransferSettings,
    b64,
    file_size,
    first_line,
    from_sdk,
    mapped_errors,
    mismatch,
    split_bucket_url,
)

_CHUNK_ALIGN = 256 * 1024  # resumable chunks must be multiples of 256 KiB


class GcsStorage(PrefixedKeys):
    """Storage in a GCS bucket under an optional prefix, over a ``storage.Client``."""

    scheme = "gs"

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        settings: TransferSettings | None = None,
    ) -> None:
        super().__init__(bucket, prefix)
        self.client = client
        self.settings = settings or TransferSettings.from_env()
        self._bucket = client.bucket(bucket)

    def _retry(self) -> Any:
        """The SDK's retry policy: a time budget, since google-api-core counts time, not tries.

        One attempt (DB_BACKUP_STORAGE_RETRIES=1) disables SDK retries altogether.
        """
        from google.cloud.storage.retry import DEFAULT_RETRY

        if self.settings.sdk_retries <= 1:
            return None
        budget = self.settings.timeout * self.settings.sdk_retries
        return DEFAULT_RETRY.with_timeout(budget)

    def _blob(self, key: str, chunked: bool = False) -> Any:
        chunk = max(_CHUNK_ALIGN, self.settings.part_size // _CHUNK_ALIGN * _CHUNK_ALIGN)
        return self._bucket.blob(self.full_key(key), chunk_size=chunk if chunked else None)

    # -- writes ---------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        with self._sdk(key):
            blob.upload_from_string(
                data, timeout=self.settings.timeout, retry=self._retry(), checksum="crc32c"
            )
        self._check_md5(key, blob, hashlib.md5(data, usedforsecurity=False).digest())

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """An upload with ``ifGenerationMatch=0``: GCS refuses it (412) when the key exists."""
        try:
            with self._sdk(key):
                self._blob(key).upload_from_string(
                    data,
                    timeout=self.settings.timeout,
                    retry=self._retry(),
                    checksum="crc32c",
                    if_generation_match=0,
                )
        except StorageError as exc:
            if exc.__cause__ is not None and _status_of(exc.__cause__) == 412:
                return False
            raise
        return True

    def put_file(self, key: str, path: Path) -> UploadReceipt:
        from db_backup.storage.cloud import HashingReader

        size = file_size(path)
        blob = self._blob(key, chunked=size > self.settings.part_size)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise PermanentStorageError(f"staged file {path}: {exc}") from exc
        with fh, self._sdk(key):
            reader = HashingReader(fh)  # type: ignore[arg-type]
            blob.upload_from_file(
                reader,
                size=size,
                timeout=self.settings.timeout,
                retry=self._retry(),
                checksum="crc32c",
            )
        digests = reader.digests()
        # The SDK compared the crc32c of the bytes it sent with the one the store
        # computed (DataCorruption otherwise); the store's size must match too.
        if blob.size is not None and int(blob.size) != digests.size:
            raise mismatch(self.where(key), "size", str(digests.size), str(blob.size))
        return UploadReceipt(digests.size, digests.sha256, "gcs:crc32c")

    def _check_md5(self, key: str, blob: Any, md5: bytes) -> str:
        theirs = blob.md5_hash
        if theirs and theirs != b64(md5):
            raise mismatch(self.where(key), "md5", b64(md5), theirs)
        return "gcs:crc32c+md5" if theirs else "gcs:crc32c"

    # -- reads ----------------------------------------------------------------
    def get_file(self, key: str, dest: Path) -> None:
        blob = self._blob(key)
        with self._sdk(key), open(dest, "wb") as fh:
            blob.download_to_file(fh, timeout=self.settings.timeout, retry=self._retry())

    def get_bytes(self, key: str) -> bytes:
        with self._sdk(key):
            data: bytes = self._blob(key).download_as_bytes(
                timeout=self.settings.timeout, retry=self._retry()
            )
        return data

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        blob = self._blob(key)
        with self._sdk(key):
            stream = blob.open(
                "rb",
                chunk_size=self.settings.part_size,
                timeout=self.settings.timeout,
                retry=self._retry(),
            )
            # BlobReader fetches lazily: read the metadata now so a missing key fails here.
            blob.reload(timeout=self.settings.timeout, retry=self._retry())
        try:
            yield MappedReader(stream.read, lambda e: self._error(e, key))  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                stream.close()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._sdk(prefix or "/"):
            blobs = self.client.list_blobs(
                self.bucket,
                prefix=self.list_prefix(prefix),
                timeout=self.settings.timeout,
                retry=self._retry(),
            )
            for blob in blobs:
                yield ObjectInfo(self.relative(blob.name), int(blob.size or 0), blob.updated)

    def exists(self, key: str) -> bool:
        with self._sdk(key):
            return bool(self._blob(key).exists(timeout=self.settings.timeout, retry=self._retry()))

    def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectNotFound), self._sdk(key):
            self._blob(key).delete(timeout=self.settings.timeout, retry=self._retry())

    # -- errors ---------------------------------------------------------------
    def _sdk(self, key: str) -> contextlib.AbstractContextManager[None]:
        """google-cloud errors raised inside as StorageErrors naming ``key``."""
        return mapped_errors(lambda exc: self._error(exc, key))

    def _error(self, exc: Exception, key: str) -> StorageError | None:
        where = self.where(key) if key != "/" else self.describe()
        err = map_gcs_error(exc, self.bucket, where)
        if isinstance(err, ObjectNotFound) and not self._bucket_exists():
            return PermanentStorageError(f"bucket {self.bucket!r} does not exist ({where})")
        return err

    def _bucket_exists(self) -> bool:
        try:
            return bool(self._bucket.exists(timeout=self.settings.timeout))
        except Exception:
            return True  # cannot tell: keep the original error


def map_gcs_error(exc: BaseException, bucket: str, where: str) -> StorageError | None:
    """A google-cloud / google-auth / requests error as a StorageError.

    None for an exception that is not the SDK's or the network's (see ``mapped_errors``).
    """
    if isinstance(exc, StorageError):
        return exc
    status = _status_of(exc)
    text = first_line(exc)
    if type(exc).__name__ in ("DefaultCredentialsError", "RefreshError"):
        return PermanentStorageError(f"{where}: no usable Google credentials ({text})")
    if status == 404:
        if "bucket" in text.lower() and "object" not in text.lower():
            return PermanentStorageError(f"bucket {bucket!r} does not exist ({where})")
        return ObjectNotFound(f"object {where} not found")
    if status in (401, 403):
        return PermanentStorageError(f"{where}: access refused (HTTP {status}: {text})")
    if status is not None and (status >= 500 or status in (408, 429)):
        return StorageError(f"{where}: HTTP {status} ({text}); a retry may succeed")
    if status is not None and 400 <= status < 500:
        return PermanentStorageError(f"{where}: HTTP {status} ({text})")
    if type(exc).__name__ == "DataCorruption":
        return StorageError(f"{where}: checksum mismatch in transit ({text})")
    if from_sdk(exc, "google", "google_crc32c", "google_resumable_media"):
        return StorageError(f"{where}: connection failed ({type(exc).__name__}: {text})")
    return None  # not the SDK's: raised as it is, never retried


def _status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def gcs_client(project: str | None = None) -> Any:
    """A storage.Client from the standard environment (anonymous for an emulator)."""
    from google.cloud import storage  # type: ignore[attr-defined]

    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "db-backup", credentials=AnonymousCredentials())
    return storage.Client(project=project)


def open_gcs_url(url: str) -> GcsStorage:
    """``gs://bucket/prefix`` with credentials from the Google environment."""
    bucket, prefix = split_bucket_url(url, "gs")
    with mapped_errors(lambda exc: map_gcs_error(exc, bucket, url)):
        client = gcs_client()
    return GcsStorage(client, bucket, prefix)
