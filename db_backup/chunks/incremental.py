"""Incremental mode: the backup steps around :mod:`db_backup.chunks.index`.

A backup in ``incremental`` mode runs the usual recipe (dump -> checksum ->
upload -> manifest); only the sink differs: a :class:`ChunkingSink` stores
the dump as deduplicated chunks while it runs and stages a small index per
part, which the usual upload step stores. :func:`finish_manifest` then turns
the manifest into an incremental one (format version 2, sizes that count
what was really uploaded) after checking the chunk-store safety rules.
"""

from __future__ import annotations

from pathlib import Path

from db_backup.chunks.chunking import ChunkParams
from db_backup.chunks.gc import check_concurrent_gc
from db_backup.chunks.index import ChunkPolicy, StorageClock, chunk_key, require_good_chunks
from db_backup.chunks.writer import ChunkedStagedObject, ChunkingSink
from db_backup.crypto.stream import DataKey
from db_backup.errors import ConfigError, IntegrityError
from db_backup.manifest import INCREMENTAL_FORMAT_VERSION, Manifest
from db_backup.pipeline import DEFAULT_LEVEL, ProgressFn, StagedObject
from db_backup.storage.base import Storage

MODES = ("full", "incremental")


def check_mode(mode: str) -> str:
    """The backup mode, validated: 'full' (one object per part) or 'incremental'."""
    if mode not in MODES:
        raise ConfigError(f"backup mode {mode!r} is unknown (use {' or '.join(MODES)})")
    return mode


def chunking_sink(
    storage: Storage,
    staging: Path,
    level: int = DEFAULT_LEVEL,
    progress: ProgressFn | None = None,
    params: ChunkParams | None = None,
    policy: ChunkPolicy | None = None,
    key: DataKey | None = None,
) -> ChunkingSink:
    """A sink that chunks every part into ``storage``'s chunk store (sealed with ``key``)."""
    return ChunkingSink(
        staging,
        level=level,
        progress=progress,
        storage=storage,
        params=params or ChunkParams(),
        policy=policy or ChunkPolicy(),
        key=key,
    )


def finish_manifest(
    storage: Storage,
    manifest: Manifest,
    staged: list[StagedObject],
    policy: ChunkPolicy | None = None,
) -> Manifest:
    """The incremental manifest, after the safety checks that precede writing it.

    Refuses (IntegrityError, nothing written) when the backup ran longer than
    the GC protocol covers, when a concurrent GC removed one of its chunks, or
    when a read found one of its chunks corrupted while it ran.
    """
    policy = policy or ChunkPolicy()
    chunked = [o for o in staged if isinstance(o, ChunkedStagedObject)]
    if len(chunked) != len(staged):
        raise IntegrityError("incremental backup has parts that were not chunked")
    firsts = [o.first_decision for o in chunked if o.first_decision is not None]
    since = min(firsts) if firsts else None
    if since is not None and StorageClock(storage).now() - since > policy.max_backup_time:
        raise IntegrityError(
            f"backup {manifest.name}/{manifest.backup_id} ran longer than "
            f"{policy.max_backup_time}, the longest a chunk store backup is protected "
            "from garbage collection; no manifest written"
        )
    for key_id in sorted({o.key_id or "" for o in chunked}):
        digests = sorted({d for o in chunked if (o.key_id or "") == key_id for d in o.digests})
        check_concurrent_gc(storage, since, digests, key_id or None)
    keys = {chunk_key(d, o.key_id) for o in chunked for d in o.digests}
    require_good_chunks(storage, keys, f"backup {manifest.name}/{manifest.backup_id}")
    return _account(manifest, chunked)


def _account(manifest: Manifest, chunked: list[ChunkedStagedObject]) -> Manifest:
    index_bytes = sum(o.size for o in chunked)
    stats = [o.chunk_stats for o in chunked]
    update = {
        "format_version": INCREMENTAL_FORMAT_VERSION,
        "mode": "incremental",
        "stored_bytes": index_bytes + sum(s.distinct_stored_bytes for s in stats),
        "uploaded_bytes": index_bytes + sum(s.new_bytes + s.refreshed_bytes for s in stats),
        "deduplicated_bytes": sum(s.reused_raw_bytes for s in stats),
        "extra": {
            **manifest.extra,
            "chunks": {
                "total": sum(s.chunks for s in stats),
                "new": sum(s.new_chunks for s in stats),
                "refreshed": sum(s.refreshed_chunks for s in stats),
                "reused": sum(s.reused_chunks for s in stats),
                "index_bytes": index_bytes,
            },
        },
    }
    return manifest.model_copy(update=update)
