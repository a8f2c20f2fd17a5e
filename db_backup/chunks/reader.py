"""Reading chunked backups: every chunk fetched, authenticated when sealed and checked
against its digest, for restore, export and verify (layout: :mod:`db_backup.chunks.index`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import zstandard

from db_backup.chunks.index import (
    DEFAULT_WORKERS,
    ChunkIndex,
    chunk_key,
    mark_bad,
    read_index,
)
from db_backup.crypto.stream import DataKey
from db_backup.errors import BackupError, ChecksumMismatch, IntegrityError, ObjectNotFound
from db_backup.manifest import StoredObject
from db_backup.pipeline import check_digest
from db_backup.storage.base import Storage


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
    try:
        return _decode_checked(blob, name, digest, raw_size, where, key)
    except BackupError as exc:
        mark_bad(storage, name, str(exc))
        raise


def _decode_checked(
    blob: bytes, name: str, digest: str, raw_size: int, where: str, key: DataKey | None
) -> bytes:
    """The chunk's zstd frame once authenticated (sealed), decoded and its digest checked."""
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
