"""Azure Blob Storage (and Azurite) through azure-storage-blob.

Promises, on top of :mod:`db_backup.storage.base`:

* a file larger than one part goes up as blocks of ``part_size`` bytes,
  ``concurrency`` at a time, each with a transactional Content-MD5 the
  service checks; the blob changes only at ``Put Block List``, so readers see
  the old blob or the whole new one, never a partial one (uncommitted blocks
  of a failed upload are invisible and expire on their own);
* the whole-file MD5 is stored as the blob's Content-MD5 and its sha256 as
  metadata; a single-request upload's Content-MD5 is computed by the service
  and compared with ours;
* the whole-file sha256 of the bytes read goes back to the caller.

``az://container/prefix`` URLs take ``AZURE_STORAGE_CONNECTION_STRING``, or
``AZURE_STORAGE_ACCOUNT_URL`` with azure-identity's DefaultAzureCredential.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from db_backup.errors import ConfigError, ObjectNotFound, PermanentStorageError, StorageError
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
    read_small,
    split_bucket_url,
    upload_parts,
)

_PERMANENT_CODES = {
    "ContainerNotFound",
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "InsufficientAccountPermissions",
    "AccountIsDisabled",
    "InvalidResourceName",
}


class AzureBlobStorage(PrefixedKeys):
    """Storage in an Azure Blob container under an optional prefix, over a ContainerClient."""

    scheme = "az"

    def __init__(
        self,
        container: Any,
        prefix: str = "",
        settings: TransferSettings | None = None,
    ) -> None:
        super().__init__(container.container_name, prefix)
        self.container = container
        self.settings = settings or TransferSettings.from_env()

    def _blob(self, key: str) -> Any:
        return self.container.get_blob_client(self.full_key(key))

    # -- writes ---------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        self._put_single(key, data)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """``overwrite=False`` sends ``If-None-Match: *``: 409 BlobAlreadyExists when taken."""
        try:
            with self._sdk(key):
                self._blob(key).upload_blob(
                    data, overwrite=False, validate_content=True, timeout=int(self.settings.timeout)
                )
        except StorageError as exc:
            code = str(getattr(exc.__cause__, "error_code", "") or "")
            status = getattr(exc.__cause__, "status_code", None)
            if code in ("BlobAlreadyExists", "ConditionNotMet") or status == 412:
                return False
            raise
        return True

    def put_file(self, key: str, path: Path) -> UploadReceipt:
        if file_size(path) <= self.settings.part_size:
            return self._put_single(key, read_small(path))
        with self._sdk(key):
            return self._put_blocks(key, path)

    def _put_single(self, key: str, data: bytes) -> UploadReceipt:
        from azure.storage.blob import ContentSettings

        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        sha256 = hashlib.sha256(data).hexdigest()
        with self._sdk(key):
            reply = self._blob(key).upload_blob(
                data,
                overwrite=True,
                validate_content=True,
                content_settings=ContentSettings(content_md5=bytearray(md5)),
                metadata={"sha256": sha256},
                timeout=int(self.settings.timeout),
            )
        theirs = reply.get("content_md5")
        if theirs and bytes(theirs) != md5:
            raise mismatch(self.where(key), "Content-MD5", b64(md5), b64(bytes(theirs)))
        return UploadReceipt(len(data), sha256, "azure:content-md5")

    def _put_blocks(self, key: str, path: Path) -> UploadReceipt:
        from azure.storage.blob import BlobBlock, ContentSettings

        blob = self._blob(key)
        token = uuid.uuid4().hex[:12]  # fresh ids: a retry never commits an old attempt's block

        def block_id(index: int) -> str:
            return base64.b64encode(f"{token}-{index:08d}".encode()).decode()

        def send(index: int, data: bytes, _sha256: bytes) -> str:
            ident = block_id(index)
            blob.stage_block(
                ident,
                data,
                length=len(data),
                validate_content=True,
                timeout=int(self.settings.timeout),
            )
            return ident

        s = self.settings
        parts, digests = upload_parts(path, s.part_size, s.concurrency, send, want_md5=True)
        blob.commit_block_list(
            [BlobBlock(block_id=p.reply) for p in parts],
            content_settings=ContentSettings(content_md5=bytearray(digests.md5)),
            metadata={"sha256": digests.sha256},
            timeout=int(s.timeout),
        )
        check = f"azure:content-md5-per-block({len(parts)})"
        return UploadReceipt(digests.size, digests.sha256, check)

    # -- reads ----------------------------------------------------------------
    def get_file(self, key: str, dest: Path) -> None:
        with self._sdk(key):
            stream = self._blob(key).download_blob(
                max_concurrency=self.settings.concurrency, timeout=int(self.settings.timeout)
            )
            with open(dest, "wb") as fh:
                stream.readinto(fh)

    def get_bytes(self, key: str) -> bytes:
        with self._sdk(key):
            stream = self._blob(key).download_blob(timeout=int(self.settings.timeout))
            data: bytes = stream.readall()
        return data

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        with self._sdk(key):
            stream = self._blob(key).download_blob(timeout=int(self.settings.timeout))
        yield MappedReader(stream.read, lambda e: self._error(e, key))  # type: ignore[misc]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._sdk(prefix or "/"):
            for item in self.container.list_blobs(
                name_starts_with=self.list_prefix(prefix), timeout=int(self.settings.timeout)
            ):
                yield ObjectInfo(self.relative(item.name), int(item.size), item.last_modified)

    def exists(self, key: str) -> bool:
        with self._sdk(key):
            return bool(self._blob(key).exists(timeout=int(self.settings.timeout)))

    def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectNotFound), self._sdk(key):
            self._blob(key).delete_blob(timeout=int(self.settings.timeout))

    # -- errors ---------------------------------------------------------------
    def _sdk(self, key: str) -> contextlib.AbstractContextManager[None]:
        """azure-core errors raised inside as StorageErrors naming ``key``."""
        return mapped_errors(lambda exc: self._error(exc, key))

    def _error(self, exc: Exception, key: str) -> StorageError | None:
        where = self.where(key) if key != "/" else self.describe()
        return map_azure_error(exc, self.bucket, where)


def map_azure_error(exc: BaseException, container: str, where: str) -> StorageError | None:
    """An azure-core error as a StorageError naming the container/blob and the cause.

    None for an exception that is not the SDK's or the network's (see ``mapped_errors``).
    """
    if isinstance(exc, StorageError):
        return exc
    from azure.core import exceptions as ax

    code = str(getattr(exc, "error_code", "") or "")
    status = getattr(exc, "status_code", None)
    text = first_line(exc)
    if code == "ContainerNotFound":
        return PermanentStorageError(f"container {container!r} does not exist ({where})")
    if isinstance(exc, ax.ResourceNotFoundError) or status == 404:
        return ObjectNotFound(f"object {where} not found")
    if isinstance(exc, ax.ClientAuthenticationError) or code in _PERMANENT_CODES:
        return PermanentStorageError(f"{where}: access refused: {code or status} ({text})")
    if isinstance(exc, ax.ServiceRequestError | ax.ServiceResponseError):
        return StorageError(f"{where}: connection failed ({text})")
    if isinstance(status, int) and (status >= 500 or status in (408, 429)):
        return StorageError(f"{where}: HTTP {status} {code} ({text}); a retry may succeed")
    if isinstance(status, int) and status in (401, 403):
        return PermanentStorageError(f"{where}: access refused (HTTP {status}: {text})")
    if isinstance(status, int) and 400 <= status < 500:
        if code in ("Md5Mismatch", "InvalidMd5"):
            return StorageError(f"{where}: checksum mismatch in transit ({code})")
        return PermanentStorageError(f"{where}: HTTP {status} {code} ({text})")
    if isinstance(exc, ax.AzureError) or from_sdk(exc, "azure"):
        return StorageError(f"{where}: {type(exc).__name__}: {text}")
    return None  # not the SDK's: raised as it is, never retried


def client_options(settings: TransferSettings) -> dict[str, Any]:
    """azure-core keyword arguments: bounded timeouts, SDK retries, block sizes."""
    return {
        "retry_total": settings.sdk_retries - 1,
        "retry_backoff_factor": 0.8,
        "connection_timeout": min(settings.timeout, 10),
        "read_timeout": settings.timeout,
        "max_block_size": settings.part_size,
        "max_single_put_size": settings.part_size,
        "max_single_get_size": settings.part_size,
        "max_chunk_get_size": settings.part_size,
    }


def container_client(
    container: str,
    settings: TransferSettings,
    connection_string: str | None = None,
    account_url: str | None = None,
) -> Any:
    """A sync ContainerClient from a connection string or an account URL (+ azure-identity)."""
    from azure.storage.blob import ContainerClient

    options = client_options(settings)
    if connection_string:
        try:
            return ContainerClient.from_connection_string(connection_string, container, **options)
        except ValueError as exc:
            # The SDK's message can quote the string: never echo it (it holds the key).
            raise ConfigError("the Azure storage connection string is malformed") from exc
    if account_url:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        return ContainerClient(account_url, container, credential=credential, **options)
    raise ConfigError(
        "Azure storage needs AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL"
    )


def open_azure_url(url: str) -> AzureBlobStorage:
    """``az://container/prefix`` with credentials from the Azure environment."""
    container, prefix = split_bucket_url(url, "az")
    settings = TransferSettings.from_env()
    client = container_client(
        container,
        settings,
        connection_string=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
        account_url=os.environ.get("AZURE_STORAGE_ACCOUNT_URL"),
    )
    return AzureBlobStorage(client, prefix, settings)
