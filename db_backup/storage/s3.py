"""Amazon S3 and S3-compatible stores (MinIO, R2, Ceph, moto) through boto3.

Promises, on top of :mod:`db_backup.storage.base`:

* a file at most one part long goes up in one ``PutObject`` carrying its
  sha256 (``x-amz-checksum-sha256``), which the store checks and echoes;
* a larger file goes up as a multipart upload: parts of ``part_size`` bytes,
  ``concurrency`` at a time, each with its sha256 checked by the store; the
  object appears only at ``CompleteMultipartUpload``, and any failure aborts
  the upload, so no partial object is ever listed;
* after the upload the checksum the store reports (full sha256, or the
  composite sha256 of the parts) is compared with the one computed here from
  the bytes read, and the whole-file sha256 goes back to the caller.

``s3://bucket/prefix`` URLs take credentials, region and endpoint from the
standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``...).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from db_backup.errors import ConfigError, ObjectNotFound, PermanentStorageError, StorageError
from db_backup.storage.base import ObjectInfo, UploadReceipt
from db_backup.storage.cloud import (
    READ_CHUNK,
    PartResult,
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
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AccountProblem",
    "InvalidBucketName",
    "NoSuchBucket",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
}


class S3Storage(PrefixedKeys):
    """Storage in an S3 bucket under an optional prefix, over a boto3 S3 client."""

    scheme = "s3"

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

    # -- writes ---------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        self._put_single(key, data)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """``PutObject`` with ``If-None-Match: *`` (S3 conditional writes, moto 5 too).

        412 PreconditionFailed: the key exists. 409 ConditionalRequestConflict: another
        conditional write of the key is in flight; either way it is not ours.
        """
        digest = hashlib.sha256(data).digest()
        try:
            with self._sdk(key):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.full_key(key),
                    Body=data,
                    ChecksumSHA256=b64(digest),
                    IfNoneMatch="*",
                )
        except StorageError as exc:
            if _precondition_failed(exc.__cause__):
                return False
            raise
        return True

    def put_file(self, key: str, path: Path) -> UploadReceipt:
        if file_size(path) <= self.settings.part_size:
            data = read_small(path)
            return self._put_single(key, data)
        return self._put_multipart(key, path)

    def _put_single(self, key: str, data: bytes) -> UploadReceipt:
        name = self.full_key(key)
        digest = hashlib.sha256(data).digest()
        with self._sdk(key):
            reply = self.client.put_object(
                Bucket=self.bucket, Key=name, Body=data, ChecksumSHA256=b64(digest)
            )
        check = self._check_single(key, reply, digest, data)
        return UploadReceipt(len(data), digest.hex(), check)

    def _check_single(self, key: str, reply: dict[str, Any], digest: bytes, data: bytes) -> str:
        theirs = reply.get("ChecksumSHA256")
        if theirs:
            if theirs != b64(digest):
                raise mismatch(self.where(key), "sha256", b64(digest), theirs)
            return "s3:sha256"
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        etag = str(reply.get("ETag", "")).strip('"')
        if not _is_md5_etag(etag):
            return "s3:size-only"
        if etag != md5:
            raise mismatch(self.where(key), "ETag", md5, etag)
        return "s3:etag-md5"

    def _put_multipart(self, key: str, path: Path) -> UploadReceipt:
        name = self.full_key(key)
        with self._sdk(key):
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256"
            )
        upload_id = upload["UploadId"]
        try:
            with self._sdk(key):
                return self._send_parts(key, name, upload_id, path)
        except BaseException:
            self._abort(name, upload_id)
            raise

    def _send_parts(self, key: str, name: str, upload_id: str, path: Path) -> UploadReceipt:
        def send(index: int, data: bytes, sha256: bytes) -> dict[str, Any]:
            reply = self.client.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=index + 1,
                Body=data,
                ChecksumSHA256=b64(sha256),
            )
            where = f"{self.where(key)} part {index + 1}"
            return _check_part(where, dict(reply), data, sha256)

        s = self.settings
        parts, digests = upload_parts(path, s.part_size, s.concurrency, send)
        reply = self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=name,
            UploadId=upload_id,
            MultipartUpload={"Parts": [_part_entry(p) for p in parts]},
        )
        check = self._check_composite(key, reply, parts)
        return UploadReceipt(digests.size, digests.sha256, check)

    def _check_composite(self, key: str, reply: dict[str, Any], parts: list[PartResult]) -> str:
        """Compare the store's checksum-of-checksums, or its multipart ETag, with ours."""
        n = len(parts)
        theirs = reply.get("ChecksumSHA256")
        if theirs:
            ours = b64(hashlib.sha256(b"".join(p.sha256 for p in parts)).digest())
            if theirs.split("-")[0] != ours:
                raise mismatch(self.where(key), "composite sha256", ours, theirs)
            return f"s3:sha256-per-part({n})+composite"
        etag = str(reply.get("ETag", "")).strip('"')
        md5s = [p.reply.get("_md5") for p in parts]
        if all(md5s) and _is_md5_etag(etag.split("-")[0]):
            joined = b"".join(bytes.fromhex(m) for m in md5s if m)
            ours = f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{n}"
            if etag != ours:
                raise mismatch(self.where(key), "multipart ETag", ours, etag)
            return f"s3:etag-md5-per-part({n})+composite"
        return f"s3:size-only({n} parts)"

    def _abort(self, name: str, upload_id: str) -> None:
        """Abort a multipart upload so its parts are dropped and never completed."""
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    # -- reads ----------------------------------------------------------------
    def get_file(self, key: str, dest: Path) -> None:
        with self.open_read(key) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, READ_CHUNK)

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as src:
            return src.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        with self._sdk(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))["Body"]
        from db_backup.storage.cloud import MappedReader

        try:
            yield MappedReader(body.read, lambda e: self._error(e, key))  # type: ignore[misc]
        finally:
            body.close()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self._sdk(prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.list_prefix(prefix)):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        self.relative(item["Key"]), int(item["Size"]), item.get("LastModified")
                    )

    def exists(self, key: str) -> bool:
        try:
            with self._sdk(key):
                self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectNotFound), self._sdk(key):
            self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))

    # -- errors ---------------------------------------------------------------
    def _sdk(self, key: str) -> contextlib.AbstractContextManager[None]:
        """boto3/botocore errors raised inside as StorageErrors naming ``key``."""
        return mapped_errors(lambda exc: self._error(exc, key))

    def _error(self, exc: Exception, key: str) -> StorageError | None:
        return map_s3_error(exc, self.bucket, self.where(key) if key != "/" else self.describe())


def _check_part(where: str, reply: dict[str, Any], data: bytes, sha256: bytes) -> dict[str, Any]:
    """Compare what the store says it received for one part with what was sent."""
    theirs = reply.get("ChecksumSHA256")
    if theirs:
        if theirs != b64(sha256):
            raise mismatch(where, "sha256", b64(sha256), theirs)
        return reply
    # No additional checksum echoed (moto, older S3-compatible stores): the part's
    # ETag is the MD5 the store computed over the bytes it received.
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    etag = str(reply.get("ETag", "")).strip('"')
    if _is_md5_etag(etag) and etag != md5:
        raise mismatch(where, "ETag", md5, etag)
    reply["_md5"] = md5 if _is_md5_etag(etag) else None
    return reply


def _precondition_failed(exc: BaseException | None) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412


def _is_md5_etag(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower())


def _part_entry(part: PartResult) -> dict[str, Any]:
    entry = {"PartNumber": part.index + 1, "ETag": part.reply["ETag"]}
    if part.reply.get("ChecksumSHA256"):
        entry["ChecksumSHA256"] = part.reply["ChecksumSHA256"]
    return entry


def map_s3_error(exc: BaseException, bucket: str, where: str) -> StorageError | None:
    """A botocore/boto3 error as a StorageError naming the bucket/key and the cause.

    None for an exception that is not the SDK's or the network's (see ``mapped_errors``).
    """
    if isinstance(exc, StorageError):
        return exc
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        return _client_error(exc, bucket, where)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return PermanentStorageError(f"{where}: no usable AWS credentials ({first_line(exc)})")
    if isinstance(exc, bx.ParamValidationError):
        return PermanentStorageError(f"{where}: invalid request ({first_line(exc)})")
    if isinstance(exc, bx.BotoCoreError) or from_sdk(exc, "botocore", "boto3", "s3transfer"):
        return StorageError(f"{where}: connection failed ({first_line(exc)})")
    return None  # not the SDK's: raised as it is, never retried


def _client_error(exc: Any, bucket: str, where: str) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = error.get("Message") or code or f"HTTP {status}"
    if code == "NoSuchBucket":
        return PermanentStorageError(f"bucket {bucket!r} does not exist ({where})")
    if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchUpload"):
        return ObjectNotFound(f"object {where} not found")
    if code in _PERMANENT_CODES or status in (401, 403):
        return PermanentStorageError(f"{where}: access refused: {code} ({message})")
    if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
        return StorageError(f"{where}: {code or status} ({message}); a retry may succeed")
    return PermanentStorageError(f"{where}: {code or status} ({message})")


def s3_client(settings: TransferSettings, endpoint_url: str | None = None, **session: Any) -> Any:
    """A boto3 S3 client with our timeouts and SDK retries, from the standard environment."""
    import boto3

    endpoint = (
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    config = sdk_config(settings, path_style=bool(endpoint))
    boto_session = boto3.session.Session(**session)
    # No region anywhere (env, profile): S3 answers in us-east-1, emulators accept any.
    region = None if boto_session.region_name else "us-east-1"
    try:
        return boto_session.client("s3", endpoint_url=endpoint, config=config, region_name=region)
    except ValueError as exc:  # a malformed endpoint URL
        raise ConfigError(f"S3 endpoint {endpoint!r} is invalid: {first_line(exc)}") from exc


def sdk_config(settings: TransferSettings, path_style: bool = False) -> Any:
    """botocore Config: standard retry mode, bounded timeouts, pool sized for the parts."""
    from botocore.config import Config

    extra: dict[str, Any] = {"s3": {"addressing_style": "path"}} if path_style else {}
    return Config(
        retries={"mode": "standard", "max_attempts": settings.sdk_retries},
        connect_timeout=min(settings.timeout, 10),
        read_timeout=settings.timeout,
        max_pool_connections=max(10, settings.concurrency + 2),
        **extra,
    )


def open_s3_url(url: str) -> S3Storage:
    """``s3://bucket/prefix`` with credentials and endpoint from the AWS environment."""
    bucket, prefix = split_bucket_url(url, "s3")
    settings = TransferSettings.from_env()
    return S3Storage(s3_client(settings), bucket, prefix, settings)
