"""Writing chunked backups: the uploader that dedups chunks against the store and the
:class:`ChunkingSink` connectors write into (layout and GC rules: :mod:`db_backup.chunks.index`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

import zstandard

from db_backup.chunks.chunking import Chunker, ChunkParams
from db_backup.chunks.index import (
    DEFAULT_WORKERS,
    INDEX_SUFFIX,
    ChunkIndex,
    ChunkPolicy,
    StorageClock,
    bad_chunks,
    bad_record_key,
    chunk_key,
    lookup,
)
from db_backup.crypto.stream import ALGORITHM, DataKey
from db_backup.errors import ConfigError
from db_backup.manifest import CHUNKED
from db_backup.pipeline import DEFAULT_LEVEL, DumpSink, ProgressFn, StagedObject
from db_backup.storage.base import Storage


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
        self.bad = bad_chunks(storage)
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
        """Reuse a young enough copy in the store, else upload (renewing an old one).

        A chunk recorded bad is never reused: it is uploaded again and its record cleared.
        """
        key = chunk_key(digest, self.key_id)
        now = self.clock.now()
        with self._lock:
            if self.first_decision is None or now < self.first_decision:
                self.first_decision = now
        info = lookup(self.storage, key)
        fresh = now - self.policy.refresh_age
        if info is not None and info.modified and info.modified >= fresh and key not in self.bad:
            self._count_reuse(len(data))
            return info.size
        blob = self._compressor().compress(data)
        if self.key is not None:
            blob = self.key.seal(blob)
        self.storage.put_bytes(key, blob)
        if key in self.bad:
            self.storage.delete(bad_record_key(key))
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
