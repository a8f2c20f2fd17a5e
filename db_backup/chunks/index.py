"""A deduplicated, content-addressed chunk store shared by every engine.

Layout in any :class:`~db_backup.storage.base.Storage`::

    _chunks/ab/abcdef...        one zstd frame per chunk, key = sha256 of the raw chunk
    _chunks/k-<key id>/ab/...   encrypted backups: zstd frame sealed with the data key
                                (crypto format), name = keyed HMAC-SHA256 of the raw chunk
    <name>/<id>/<file>.chunks   the per-backup index (zstd JSON: chunks in order;
                                sealed with the data key when the backup is encrypted)
    <name>/<id>/manifest.json   written last; its object points to the index
    _gc/<run>.json              markers of garbage collections (see gc.py)
    _bad/ab/abcdef...           a chunk found corrupted by a read (verify, restore,
                                export, drill); mirrors the chunk's key under _chunks/

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

**A chunk found bad is never reused** (docs/incremental.md): a read that finds
a stored chunk altered (verify, restore, export, drill all read through
:func:`db_backup.chunks.reader._fetch`) records it under ``_bad/``. Backups
load those records when they start and upload such a chunk again instead of
reusing it (which clears the record), and before writing a manifest a backup
re-reads the records and refuses to commit when one of its chunks is still
recorded bad.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import zstandard

from db_backup import defaults
from db_backup.crypto.stream import ALGORITHM, DataKey, header_key_id
from db_backup.errors import (
    BackupError,
    EncryptionError,
    IntegrityError,
    ManifestError,
    ObjectNotFound,
)
from db_backup.manifest import StoredObject
from db_backup.pipeline import check_digest
from db_backup.storage.base import ObjectInfo, Storage

CHUNK_PREFIX = "_chunks/"
GC_PREFIX = "_gc/"
BAD_PREFIX = "_bad/"
INDEX_SUFFIX = ".chunks"
INDEX_FORMAT = "db-backup-chunk-index"
INDEX_VERSION = 1
REFRESH_AGE = defaults.REFRESH_AGE
MAX_BACKUP_TIME = defaults.MAX_BACKUP_TIME
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


def bad_record_key(chunk: str) -> str:
    """Where the "found bad" record of the chunk stored at ``chunk`` lives."""
    return BAD_PREFIX + chunk[len(CHUNK_PREFIX) :]


def bad_chunks(storage: Storage) -> set[str]:
    """The storage keys of every chunk a read found corrupted (one listing)."""
    return {CHUNK_PREFIX + i.key[len(BAD_PREFIX) :] for i in storage.list(BAD_PREFIX)}


def mark_bad(storage: Storage, chunk: str, reason: str) -> None:
    """Record that the chunk stored at ``chunk`` is corrupted, so no backup reuses it.

    Best effort: a store the reader may not write to (read-only credentials)
    only loses the record; the read still fails with its own error.
    """
    doc = {"chunk": chunk, "found_at": datetime.now(UTC).isoformat(), "reason": reason}
    with contextlib.suppress(BackupError):
        storage.put_bytes(bad_record_key(chunk), json.dumps(doc).encode())


def require_good_chunks(storage: Storage, keys: set[str], what: str) -> None:
    """Raise IntegrityError when a chunk of ``keys`` is recorded bad (nothing is written)."""
    bad = sorted(keys & bad_chunks(storage))
    if bad:
        raise IntegrityError(
            f"{what} uses {len(bad)} chunk(s) found corrupted while it ran (first: {bad[0]}); "
            "no manifest written: run the backup again, it uploads them anew"
        )


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
    if obj.encrypted and key is None:
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
    index = ChunkIndex.from_bytes(data, obj.key, key if obj.encrypted else None)
    if (index.key_id is not None) != obj.encrypted:
        raise IntegrityError(
            f"chunk index {obj.key} and the manifest disagree on whether it is encrypted"
        )
    return index


def wait_seconds(seconds: float) -> None:
    """Sleep (patched in tests)."""
    time.sleep(seconds)
