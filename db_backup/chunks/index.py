"""A deduplicated, content-addressed chunk store shared by every engine.

Layout in any :class:`~db_backup.storage.base.Storage`::

    _chunks/ab/abcdef...        one zstd frame per chunk, key = sha256 of the raw chunk
    _chunks/k-<key id>/ab/...   encrypted backups: zstd frame sealed with the data key
                                (crypto format), name = keyed HMAC-SHA256 of the raw chunk
    <name>/<id>/<file>.chunks   the per-backup index (zstd JSON: chunks in order;
                                sealed with the data key when the backup is encrypted)
    <name>/<id>/manifest.json   written last; its object points to the index
    _gc/<run>.json              markers of garbage collections (see chunkgc)

A backup writes chunks first, the index next and the manifest last, so a
manifest only ever points at data already stored. Every index is complete on
its own: restoring a backup needs its index and its chunks, never an older
backup.

**Why a chunk it relies on cannot vanish** (the GC protocol, also in
docs/incremental.md): when a backup meets a chunk that already exists, it
reuses it only when the chunk's upload time (``ObjectInfo.modified``, on the
store's clock) is younger than ``refresh_age``; an older chunk is uploaded
again, which renews its time. GC deletes only unreferenced chunks older than
``grace >= refresh_age + max_backup_time`` measured from the GC's start, so a
chunk a running backup relies on is never a candidate. Because a GC decides
from a listing and deletes later, a backup that ran while a GC ran re-checks,
before writing its manifest, that every chunk it references exists, and fails
(writing nothing) if one is missing.

**Encryption** (with a :class:`~db_backup.crypto.stream.DataKey`): every chunk is
compressed then sealed, and named by ``key.chunk_id(raw)`` (a keyed hash), in a
namespace of its own per key id; so a chunk name reveals no plaintext hash, the
same plaintext under the same key still dedups, and chunks of different keys
never meet. The index is sealed too. Reading checks every chunk's
authentication tag and then its keyed id, so a chunk altered, swapped or
replaced fails before anything uses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from db_backup.chunks.chunking import Chunker, ChunkParams
from db_backup.crypto.stream import ALGORITHM, DataKey, header_key_id
from db_backup.errors import (
    ChecksumMismatch,
    ConfigError,
    EncryptionError,
    IntegrityError,
    ManifestError,
    ObjectNotFound,
)
from db_backup.manifest import StoredObject
from db_backup.pipeline import (
    DEFAULT_LEVEL,
    DumpSink,
    ProgressFn,
    StagedObject,
    check_digest,
)
from db_backup.storage.base import ObjectInfo, Storage

CHUNK_PREFIX = "_chunks/"
GC_PREFIX = "_gc/"
CHUNKED = "chunked"
INDEX_SUFFIX = ".chunks"
INDEX_FORMAT = "db-backup-chunk-index"
INDEX_VERSION = 1
REFRESH_AGE = timedelta(days=7)
MAX_BACKUP_TIME = timedelta(days=2)
DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class ChunkPolicy:
    """Timing rules shared by backups and GC (see the module docstring)."""

    refresh_age: timedelta = REFRESH_AGE
    max_backup_time: timedelta = MAX_BACKUP_TIME

    @property
    def min_grace(self) -> timedelta:
        """The shortest GC grace period that keeps running backups safe."""
        return self.refresh_age + self.max_backup_time


KEYED_PREFIX = "k-"


def chunk_key(digest: str, key_id: str | None = None) -> str:
    """Where a chunk lives: ``digest`` is its raw sha256, or with ``key_id`` its keyed id
    under that key's namespace."""
    if key_id:
        return f"{CHUNK_PREFIX}{KEYED_PREFIX}{key_id}/{digest[:2]}/{digest}"
    return f"{CHUNK_PREFIX}{digest[:2]}/{digest}"


def chunk_namespace(key: str) -> str | None:
    """The key id whose namespace holds the chunk stored at ``key`` (None: plain chunks)."""
    rest = key[len(CHUNK_PREFIX) :] if key.startswith(CHUNK_PREFIX) else ""
    if rest.startswith(KEYED_PREFIX) and "/" in rest:
        return rest[len(KEYED_PREFIX) : rest.index("/")]
    return None


def is_chunked(obj: StoredObject) -> bool:
    """True when ``obj`` is an index of chunks rather than a whole encoded dump."""
    return CHUNKED in obj.encoding


def is_sealed(obj: StoredObject) -> bool:
    """True when ``obj``'s chunks and index are encrypted (it needs the data key)."""
    return is_chunked(obj) and ALGORITHM in obj.encoding


def lookup(storage: Storage, key: str) -> ObjectInfo | None:
    """The object ``key`` with its size and upload time, or None."""
    return next((i for i in storage.list(key) if i.key == key), None)


class StorageClock:
    """The store's idea of now, read once from an object's upload time.

    Chunk ages are compared on the store's clock, so a skewed host clock can
    neither make a backup trust an old chunk nor make GC delete a young one.
    """

    def __init__(self, storage: Storage) -> None:
        key = f"{GC_PREFIX}clock-{uuid.uuid4().hex}"
        storage.put_bytes(key, b"clock\n")
        try:
            info = lookup(storage, key)
        finally:
            storage.delete(key)
        local = datetime.now(UTC)
        stored = info.modified if info and info.modified else local
        self._offset = stored - local

    def now(self) -> datetime:
        """The store's current time (UTC)."""
        return datetime.now(UTC) + self._offset


# -- the index ----------------------------------------------------------------


@dataclass
class ChunkIndex:
    """The chunks of one dump part, in order: (sha256, raw size, stored size)."""

    part: str
    format: str
    params: dict[str, Any]
    raw_size: int = 0
    raw_sha256: str = ""
    chunks: list[tuple[str, int, int]] = field(default_factory=list)
    key_id: str | None = None  # set when chunks are sealed with that data key

    @property
    def chunk_encoding(self) -> list[str]:
        """How each chunk is stored: zstd, then sealed when the index has a key id."""
        return ["zstd", ALGORITHM] if self.key_id else ["zstd"]

    def chunk_keys(self) -> list[str]:
        """The storage keys of this index's chunks, in order (repeats kept)."""
        return [chunk_key(d, self.key_id) for d, _, _ in self.chunks]

    def to_bytes(self, key: DataKey | None = None) -> bytes:
        """zstd-compressed JSON, sealed with ``key`` when given: the stored form."""
        if (key.key_id_hex if key else None) != self.key_id:
            raise EncryptionError(f"chunk index of part {self.part} must be sealed with its key")
        doc = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "part": self.part,
            "data_format": self.format,
            "chunking": self.params,
            "chunk_encoding": self.chunk_encoding,
            "raw_size": self.raw_size,
            "raw_sha256": self.raw_sha256,
            "chunks": [list(c) for c in self.chunks],
        }
        if self.key_id:
            doc["key_id"] = self.key_id
        data = zstandard.ZstdCompressor(level=3).compress(json.dumps(doc).encode())
        return key.seal(data) if key else data

    @classmethod
    def from_bytes(cls, data: bytes, where: str, key: DataKey | None = None) -> ChunkIndex:
        """Parse a stored index strictly; ManifestError naming ``where`` on any problem.

        A sealed index needs ``key`` (EncryptionError otherwise, or when it was altered).
        """
        sealed_by = header_key_id(data)
        if sealed_by is not None:
            if key is None:
                raise EncryptionError(
                    f"chunk index {where} is encrypted with key {sealed_by}: "
                    "reading it needs the passphrase"
                )
            data = key.open(data, f"chunk index {where}")
        try:
            doc = json.loads(zstandard.ZstdDecompressor().decompress(data))
        except (zstandard.ZstdError, ValueError) as exc:
            raise ManifestError(f"chunk index {where} cannot be read: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise ManifestError(f"chunk index {where} is not a db-backup chunk index")
        key_id = doc.get("key_id")
        want = ["zstd", ALGORITHM] if key_id else ["zstd"]
        if doc.get("version") != INDEX_VERSION or doc.get("chunk_encoding") != want:
            raise ManifestError(
                f"chunk index {where} has version {doc.get('version')!r} / encoding "
                f"{doc.get('chunk_encoding')!r}; this db-backup reads version {INDEX_VERSION} "
                "with zstd (optionally aes-256-gcm) chunks only (upgrade db-backup)"
            )
        if key_id != sealed_by:
            raise ManifestError(
                f"chunk index {where} names key {key_id!r} but is sealed with {sealed_by!r}"
            )
        try:
            chunks = [(str(d), int(r), int(s)) for d, r, s in doc["chunks"]]
            return cls(
                doc["part"], doc["data_format"], doc["chunking"], doc["raw_size"],
                doc["raw_sha256"], chunks, key_id,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"chunk index {where} is malformed: {exc}") from exc


def read_index(storage: Storage, obj: StoredObject, key: DataKey | None = None) -> ChunkIndex:
    """Download and check (size, sha256) the index ``obj`` points to; open it with ``key``.

    An encrypted object needs ``key`` (EncryptionError without it, before any download).
    """
    if is_sealed(obj) and key is None:
        raise EncryptionError(
            f"chunk index {obj.key} is encrypted: reading it needs the data key (passphrase)"
        )
    try:
        data = storage.get_bytes(obj.key)
    except ObjectNotFound as exc:
        raise IntegrityError(
            f"chunk index {obj.key} listed in the manifest is missing from {storage.describe()}"
        ) from exc
    check_digest(
        f"chunk index {obj.key}",
        len(data),
        hashlib.sha256(data).hexdigest(),
        obj.size,
        obj.sha256,
    )
    index = ChunkIndex.from_bytes(data, obj.key, key if is_sealed(obj) else None)
    if (index.key_id is not None) != is_sealed(obj):
        raise IntegrityError(
            f"chunk index {obj.key} and the manifest disagree on whether it is encrypted"
        )
    return index


# -- writing: the uploader and the sink ------------------------------------------


@dataclass
class ChunkStats:
    """What one backup did with its chunks (bytes are stored = compressed sizes)."""

    chunks: int = 0
    new_chunks: int = 0
    new_bytes: int = 0
    refreshed_chunks: int = 0
    refreshed_bytes: int = 0
    reused_chunks: int = 0
    reused_raw_bytes: int = 0
    distinct_stored_bytes: int = 0


class ChunkUploader:
    """Stores chunks of one backup in parallel threads; dedups against the store.

    At most ``2 * workers`` chunks are in flight, so memory stays bounded by
    that many maximum-size chunks whatever the dump size. With ``key`` every
    chunk is sealed after compression and named by its keyed id in the key's
    namespace (see the module docstring).
    """

    def __init__(
        self,
        storage: Storage,
        level: int = DEFAULT_LEVEL,
        workers: int = DEFAULT_WORKERS,
        policy: ChunkPolicy | None = None,
        key: DataKey | None = None,
    ) -> None:
        self.storage = storage
        self.key = key
        self.key_id = key.key_id_hex if key else None
        self.level = level
        self.workers = workers
        self.policy = policy or ChunkPolicy()
        self.stats = ChunkStats()
        self.clock = StorageClock(storage)
        self.first_decision: datetime | None = None
        self._done: dict[str, int] = {}  # digest -> stored size, decided in this backup
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="chunk-upload")

    def close(self) -> None:
        """Stop the worker threads (waits for chunks in flight)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, data: memoryview) -> Future[tuple[str, int, int]]:
        """Queue one chunk; the future gives its (digest, raw size, stored size)."""
        return self._pool.submit(self._store, data)

    def digests(self) -> list[str]:
        """Every distinct chunk this backup references."""
        with self._lock:
            return list(self._done)

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "comp", None)
        if comp is None:
            comp = zstandard.ZstdCompressor(level=self.level, write_checksum=True)
            self._local.comp = comp
        return comp

    def _store(self, data: memoryview) -> tuple[str, int, int]:
        digest = self.key.chunk_id(data) if self.key else hashlib.sha256(data).hexdigest()
        with self._lock:
            known = self._done.get(digest)
        if known is not None:
            self._count_reuse(len(data))
            return digest, len(data), known
        stored = self._ensure(digest, data)
        with self._lock:
            if digest not in self._done:
                self.stats.distinct_stored_bytes += stored
            self._done[digest] = stored
        return digest, len(data), stored

    def _ensure(self, digest: str, data: memoryview) -> int:
        """Reuse a young enough copy in the store, else upload (renewing an old one)."""
        key = chunk_key(digest, self.key_id)
        now = self.clock.now()
        with self._lock:
            if self.first_decision is None or now < self.first_decision:
                self.first_decision = now
        info = lookup(self.storage, key)
        if info is not None and info.modified and info.modified >= now - self.policy.refresh_age:
            self._count_reuse(len(data))
            return info.size
        blob = self._compressor().compress(data)
        if self.key is not None:
            blob = self.key.seal(blob)
        self.storage.put_bytes(key, blob)
        with self._lock:
            if info is None:
                self.stats.new_chunks += 1
                self.stats.new_bytes += len(blob)
            else:
                self.stats.refreshed_chunks += 1
                self.stats.refreshed_bytes += len(blob)
        return len(blob)

    def _count_reuse(self, raw: int) -> None:
        with self._lock:
            self.stats.reused_chunks += 1
            self.stats.reused_raw_bytes += raw


@dataclass
class ChunkedStagedObject(StagedObject):
    """A dump part whose chunks are already stored; ``path`` is its staged index."""

    chunk_stats: ChunkStats = field(default_factory=ChunkStats)
    first_decision: datetime | None = None
    digests: list[str] = field(default_factory=list)
    key_id: str | None = None  # the data key sealing chunks and index (encrypted backups)


class _ChunkWriter(io.RawIOBase):
    """What a connector writes into: hashes the raw dump, cuts it, stores chunks.

    A raw binary stream like DumpSink's, so connectors may wrap it (buffered or text).
    """

    def __init__(
        self,
        uploader: ChunkUploader,
        index: ChunkIndex,
        params: ChunkParams,
        progress: ProgressFn | None,
    ) -> None:
        super().__init__()
        self._uploader = uploader
        self._index = index
        self._chunker = Chunker(params)
        self._digest = hashlib.sha256()
        self._pending: deque[Future[tuple[str, int, int]]] = deque()
        self._progress = progress
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._digest.update(view)
        self.size += len(view)
        for chunk in self._chunker.feed(view):
            self._queue(chunk)
        if self._progress:
            self._progress(len(view))
        return len(view)

    def _queue(self, chunk: memoryview) -> None:
        self._pending.append(self._uploader.submit(chunk))
        while len(self._pending) > 2 * self._uploader.workers:
            self._index.chunks.append(self._pending.popleft().result())

    def finish(self) -> None:
        """Store the last chunks and wait for every upload; fill in the index totals."""
        for chunk in self._chunker.finish():
            self._queue(chunk)
        while self._pending:
            self._index.chunks.append(self._pending.popleft().result())
        self._index.raw_size = self.size
        self._index.raw_sha256 = self._digest.hexdigest()


@dataclass
class ChunkingSink(DumpSink):
    """A :class:`DumpSink` that stores dumps as deduplicated chunks.

    Connectors use it exactly like a DumpSink (``open(part, filename, fmt)``).
    Chunks are uploaded while the dump runs; what gets staged (and then
    uploaded by the usual upload step) is each part's small index, with
    encoding ``["chunked"]``, or ``["chunked", "aes-256-gcm"]`` with ``key``
    (chunks and index sealed with that data key).
    """

    storage: Storage | None = None
    params: ChunkParams = field(default_factory=ChunkParams)
    workers: int = DEFAULT_WORKERS
    policy: ChunkPolicy = field(default_factory=ChunkPolicy)
    key: DataKey | None = None

    @contextlib.contextmanager
    def open(self, part: str, filename: str, fmt: str) -> Iterator[BinaryIO]:
        """Yield a writable stream for one part; its index is staged on clean exit only."""
        if self.storage is None:
            raise ValueError("ChunkingSink needs a storage")
        if self.layers:
            raise ConfigError(
                "incremental backups take no encode layers; encryption is given as a data key"
            )
        uploader = ChunkUploader(self.storage, self.level, self.workers, self.policy, self.key)
        index = ChunkIndex(part, fmt, self.params.as_dict(), key_id=uploader.key_id)
        try:
            writer = _ChunkWriter(uploader, index, self.params, self.progress)
            yield writer  # type: ignore[misc]
            writer.finish()
        finally:
            uploader.close()
        self.objects.append(self._stage_index(index, filename, uploader))

    def _stage_index(
        self, index: ChunkIndex, filename: str, uploader: ChunkUploader
    ) -> ChunkedStagedObject:
        data = index.to_bytes(self.key)
        uploader.stats.chunks = len(index.chunks)
        name = f"{filename}{INDEX_SUFFIX}"
        path = self.staging / name
        path.write_bytes(data)
        return ChunkedStagedObject(
            part=index.part,
            filename=name,
            format=index.format,
            path=path,
            encoding=[CHUNKED, ALGORITHM] if self.key else [CHUNKED],
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            raw_size=index.raw_size,
            raw_sha256=index.raw_sha256,
            chunk_stats=uploader.stats,
            first_decision=uploader.first_decision,
            digests=uploader.digests(),
            key_id=uploader.key_id,
        )


# -- reading: restore, export, verify ----------------------------------------------


def _fetch(
    storage: Storage,
    digest: str,
    raw_size: int,
    stored_size: int,
    where: str,
    key: DataKey | None = None,
) -> bytes:
    """One chunk, checked: the sha256 (keyed id with ``key``) and size of its raw bytes.

    Returns the chunk's zstd frame (decrypted and authenticated when sealed).
    """
    name = chunk_key(digest, key.key_id_hex if key else None)
    try:
        blob = storage.get_bytes(name)
    except ObjectNotFound as exc:
        raise IntegrityError(
            f"chunk {name} of {where} is missing from {storage.describe()}"
        ) from exc
    if key is not None:
        blob = key.open(blob, f"chunk {name} of {where}")
    # The stored size is not checked: a chunk renewed by a later backup (another
    # zstd level or version) may be encoded differently; the raw digest decides.
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=raw_size)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"chunk {name} of {where} cannot be decompressed: {exc}") from exc
    got = key.chunk_id(raw) if key else hashlib.sha256(raw).hexdigest()
    if len(raw) != raw_size or got != digest:
        raise ChecksumMismatch(
            f"chunk {name} of {where} decodes to {len(raw)} bytes with "
            f"{'keyed id' if key else 'sha256'} {got[:16]}… (altered or corrupted)"
        )
    return blob


def stream_chunks(
    storage: Storage,
    obj: StoredObject,
    emit: Callable[[bytes], object],
    workers: int = DEFAULT_WORKERS,
    key: DataKey | None = None,
) -> ChunkIndex:
    """Fetch and check every chunk of ``obj`` in order (parallel read-ahead).

    ``emit`` receives each chunk's zstd frame (decrypted and authenticated for
    an encrypted object, which needs ``key``) in dump order. The index totals and
    the whole part's raw size are checked too; any problem raises before the
    function returns.
    """
    index = read_index(storage, obj, key)
    chunk_key_ = key if index.key_id else None
    if (index.raw_size, index.raw_sha256) != (obj.raw_size, obj.raw_sha256):
        raise IntegrityError(f"chunk index {obj.key} does not describe the dump in the manifest")
    total = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="chunk-fetch") as pool:
        ahead: deque[Future[bytes]] = deque()
        refs = iter(index.chunks)
        for digest, raw, stored in refs:
            ahead.append(pool.submit(_fetch, storage, digest, raw, stored, obj.key, chunk_key_))
            total += raw
            if len(ahead) >= 2 * workers:
                emit(ahead.popleft().result())
        while ahead:
            emit(ahead.popleft().result())
    if total != obj.raw_size:
        raise IntegrityError(
            f"chunks of {obj.key} add up to {total} bytes but the manifest says {obj.raw_size}"
        )
    return index


def materialize(
    storage: Storage, obj: StoredObject, dest: Path, key: DataKey | None = None
) -> Path:
    """Rebuild a chunked part as one zstd stream at ``dest``, every chunk checked.

    The result is what an unencrypted full backup stages (concatenated zstd
    frames), so the connectors' restore path (``open_decoded``) reads it
    unchanged, and checks the whole dump's sha256 again as it streams. An
    encrypted part needs ``key``: each chunk is authenticated and decrypted
    here, so the staged file holds no ciphertext.
    """
    try:
        with open(dest, "wb") as out:
            stream_chunks(storage, obj, out.write, key=key)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def verify_chunked(storage: Storage, obj: StoredObject, key: DataKey | None = None) -> None:
    """Re-read the index and every chunk of ``obj``; check each chunk's digest.

    An encrypted part needs ``key`` (every chunk authenticated, then its keyed id checked).
    """
    whole = hashlib.sha256()
    size = 0
    dctx = zstandard.ZstdDecompressor()

    def absorb(blob: bytes) -> None:
        nonlocal size
        raw = dctx.decompress(blob)
        whole.update(raw)
        size += len(raw)

    stream_chunks(storage, obj, absorb, key=key)
    check_digest(f"dump rebuilt from the chunks of {obj.key}", size, whole.hexdigest(),
                 obj.raw_size, obj.raw_sha256)  # fmt: skip


def wait_seconds(seconds: float) -> None:
    """Sleep (patched in tests)."""
    time.sleep(seconds)
