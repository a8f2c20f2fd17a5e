"""What the cloud adapters (S3, GCS, Azure) share: keys under a prefix, part
size and concurrency settings, a bounded-memory parallel part uploader and
the digests computed on the bytes actually sent.

Settings (environment, read when an adapter is built)::

    DB_BACKUP_PART_SIZE          part/block/chunk size, e.g. 16MiB (default), 64MB, 8388608
    DB_BACKUP_UPLOAD_CONCURRENCY parts in flight at once (default 4)
    DB_BACKUP_STORAGE_TIMEOUT    seconds before a stalled connection is given up (default 60)
    DB_BACKUP_STORAGE_RETRIES    attempts per request inside the SDK (default 3)

Memory during an upload stays under ``part_size * (concurrency + 1)``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from db_backup.errors import ConfigError, PermanentStorageError, StorageError

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 4000 * MiB  # under Azure's 4000 MiB block limit and S3's 5 GiB
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT = 60.0
DEFAULT_SDK_RETRIES = 3
READ_CHUNK = MiB

T = TypeVar("T")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class TransferSettings:
    """Part size, parallelism, timeout and SDK-level retries of one adapter."""

    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    sdk_retries: int = DEFAULT_SDK_RETRIES

    @classmethod
    def from_env(cls) -> TransferSettings:
        """Settings from ``DB_BACKUP_*`` variables; ConfigError naming a bad one."""
        env = os.environ
        part = parse_size(env.get("DB_BACKUP_PART_SIZE", ""), DEFAULT_PART_SIZE)
        if not MIN_PART_SIZE <= part <= MAX_PART_SIZE:
            raise ConfigError(
                f"DB_BACKUP_PART_SIZE={part} is out of range (5 MiB to 4000 MiB): S3 refuses "
                "smaller parts and Azure larger blocks"
            )
        return cls(
            part_size=part,
            concurrency=_env_int("DB_BACKUP_UPLOAD_CONCURRENCY", DEFAULT_CONCURRENCY, 1, 64),
            timeout=float(_env_int("DB_BACKUP_STORAGE_TIMEOUT", int(DEFAULT_TIMEOUT), 1, 3600)),
            sdk_retries=_env_int("DB_BACKUP_STORAGE_RETRIES", DEFAULT_SDK_RETRIES, 1, 20),
        )


def parse_size(text: str, default: int) -> int:
    """'16MiB' -> 16777216, '64MB' -> 64000000, '' -> default; ConfigError otherwise."""
    if not text.strip():
        return default
    match = _SIZE_RE.match(text)
    if not match:
        raise ConfigError(f"size {text!r} is not a number of bytes like 16MiB or 8388608")
    unit = (match.group(2) or "b").lower()
    power = "bkmg".index(unit[0])
    base = 1024 if "i" in unit else 1000
    return int(match.group(1)) * base**power


def _env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range ({low} to {high})")
    return value


def split_bucket_url(url: str, scheme: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix"); ConfigError when malformed."""
    head = f"{scheme}://"
    if not url.lower().startswith(head):
        raise ConfigError(f"storage URL {url!r} does not start with {head}")
    rest = url[len(head) :]
    bucket, _, prefix = rest.partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]", bucket):
        raise ConfigError(
            f"storage URL {url!r} has no valid bucket/container name (3-63 lower-case "
            "letters, digits, '.', '-' after the scheme)"
        )
    if "?" in rest or "#" in rest or "//" in rest or ".." in prefix.split("/"):
        raise ConfigError(f"storage URL {url!r} has an invalid prefix {prefix!r}")
    return bucket, prefix.strip("/")


class PrefixedKeys:
    """Keys relative to a prefix inside a bucket or container."""

    scheme = ""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def describe(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def full_key(self, key: str) -> str:
        """The object name in the bucket; PermanentStorageError for an unsafe key."""
        clean = key.strip("/")
        if not clean or ".." in clean.split("/") or "//" in clean:
            raise PermanentStorageError(f"storage key {key!r} is invalid")
        return f"{self.prefix}/{clean}" if self.prefix else clean

    def list_prefix(self, prefix: str) -> str:
        """The bucket-level prefix for a ``list(prefix)`` call."""
        if not self.prefix:
            return prefix
        return f"{self.prefix}/{prefix}"

    def list_partials(self, prefix: str = "") -> Iterator[Any]:
        """None: an object store never shows a half-written object."""
        return iter(())

    def relative(self, name: str) -> str:
        """A bucket object name back to a key relative to the prefix."""
        if self.prefix:
            return name[len(self.prefix) + 1 :]
        return name

    def where(self, key: str) -> str:
        """``s3://bucket/prefix/key`` for messages."""
        return f"{self.scheme}://{self.bucket}/{self.full_key(key)}"


@dataclass(frozen=True)
class FileDigests:
    """Size, sha256 and md5 of the bytes read from a file for an upload."""

    size: int
    sha256: str
    md5: bytes


@dataclass(frozen=True)
class PartResult:
    """One uploaded part: its index, size and whatever the store returned for it."""

    index: int
    size: int
    sha256: bytes
    reply: Any


def b64(data: bytes) -> str:
    """Base64 text of a binary digest (the form the stores use in headers)."""
    return base64.b64encode(data).decode()


def upload_parts(
    path: Path,
    part_size: int,
    concurrency: int,
    send: Callable[[int, bytes, bytes], Any],
    want_md5: bool = False,
) -> tuple[list[PartResult], FileDigests]:
    """Read ``path`` in parts and call ``send(index, data, sha256)`` on a thread pool.

    The file is read once, in order, on the calling thread, which hashes
    every byte (sha256, and md5 when asked) as it goes, so the digests cover
    exactly the bytes handed to the store. At most ``concurrency`` parts are in
    flight; the first failure stops reading, waits for the parts in flight and
    is raised (the caller aborts the multipart upload).
    """
    whole = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
    slots = threading.BoundedSemaphore(concurrency)
    futures: list[Future[PartResult]] = []
    size = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="db-backup-part") as pool:
        try:
            for index, data in enumerate(_read_parts(path, part_size)):
                whole.update(data)
                if md5 is not None:
                    md5.update(data)
                size += len(data)
                slots.acquire()
                if _failed(futures):
                    slots.release()
                    break
                fut = pool.submit(_send_one, send, index, data)
                fut.add_done_callback(lambda _f: slots.release())
                futures.append(fut)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        finally:
            wait(futures)
    error = _failed(futures)
    if error is not None:
        raise error
    results = [f.result() for f in futures]
    md5_digest = md5.digest() if md5 is not None else b""
    return results, FileDigests(size, whole.hexdigest(), md5_digest)


def _failed(futures: list[Future[PartResult]]) -> BaseException | None:
    for fut in futures:
        if fut.done() and not fut.cancelled() and fut.exception() is not None:
            return fut.exception()
    return None


def _send_one(send: Callable[[int, bytes, bytes], Any], index: int, data: bytes) -> PartResult:
    digest = hashlib.sha256(data).digest()
    return PartResult(index, len(data), digest, send(index, data, digest))


def _read_parts(path: Path, part_size: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        first = True
        while True:
            data = fh.read(part_size)
            if not data and not first:
                return
            first = False
            yield data
            if len(data) < part_size:
                return


def file_size(path: Path) -> int:
    """Size of a local file, as a StorageError naming it when unreadable."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise PermanentStorageError(f"staged file {path} cannot be read: {exc}") from exc


def read_small(path: Path) -> bytes:
    """A file whole, for single-request uploads (at most one part)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PermanentStorageError(f"staged file {path} cannot be read: {exc}") from exc


class HashingReader(io.RawIOBase):
    """A seekable file wrapper hashing each byte once, in order, as it is first read.

    SDKs that retry a chunk seek back and read again; bytes already hashed are
    not hashed twice, so the digests equal those of the bytes sent, once.
    """

    def __init__(self, raw: BinaryIO, want_md5: bool = False) -> None:
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
        self._hashed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, size: int | None = -1) -> bytes:
        pos = self._raw.tell()
        data = self._raw.read(-1 if size is None else size)
        end = pos + len(data)
        if pos <= self._hashed < end:
            chunk = memoryview(data)[self._hashed - pos :]
            self._sha256.update(chunk)
            if self._md5 is not None:
                self._md5.update(chunk)
            self._hashed = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def digests(self) -> FileDigests:
        """What was hashed so far (the whole file after a complete upload)."""
        md5 = self._md5.digest() if self._md5 is not None else b""
        return FileDigests(self._hashed, self._sha256.hexdigest(), md5)


ErrorMapper = Callable[[Exception], StorageError | None]

# Where the SDKs' transport errors come from (besides OSError and the SDK's own package).
TRANSPORT_PACKAGES = ("urllib3", "requests", "http.client", "ssl")


@contextlib.contextmanager
def mapped_errors(mapper: ErrorMapper) -> Iterator[None]:
    """Raise SDK errors from inside as the StorageError ``mapper`` makes of them.

    ``mapper`` returns None for an exception it does not recognise (a TypeError in our
    own code, ...): that one is raised unchanged, so it is not transient and fails at
    once with its own type and message, instead of being retried as a storage error.
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        err = mapper(exc)
        if err is None:
            raise
        raise err from exc


def from_sdk(exc: BaseException, *packages: str) -> bool:
    """True when ``exc`` is an I/O or transport error, or was defined or raised by code of
    one of ``packages`` (an SDK may raise a plain ValueError on a malformed reply)."""
    if isinstance(exc, OSError):
        return True
    modules = [type(exc).__module__]
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
    names = (*packages, *TRANSPORT_PACKAGES)
    return any(m == p or m.startswith(p + ".") for m in modules for p in names)


class MappedReader(io.RawIOBase):
    """A readable stream whose SDK errors are mapped to StorageError on read."""

    def __init__(self, read: Callable[[int], bytes], mapper: ErrorMapper):
        self._read = read
        self._map = mapper

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with mapped_errors(self._map):
            return self._read(-1 if size is None else size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def mismatch(where: str, what: str, ours: str, theirs: str) -> StorageError:
    """A transient error: the store holds other bytes than were sent (retry re-sends)."""
    return StorageError(
        f"{where}: the store reports {what} {theirs} but the bytes sent have {ours} "
        "(corrupted in transit)"
    )


def first_line(exc: BaseException) -> str:
    """The first line of an SDK error's text, without secrets-bearing detail."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
