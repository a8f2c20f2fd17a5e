"""Tasks of incremental backups: chunked dump (uploads in threads inside) and manifest checks."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from db_backup import operations as ops
from db_backup.blocks.resolve import resolve_database, resolve_storage
from db_backup.chunks import incremental as inc
from db_backup.chunks.writer import ChunkedStagedObject
from db_backup.crypto.keys import KeySource, require_encrypted
from db_backup.manifest import Manifest
from db_backup.pipeline import StagedObject
from db_backup.progress import current_progress
from db_backup.tasks.encryption import load_data_key
from db_backup.tasks.policy import ONCE, io_task
from db_backup.units import human_bytes


@io_task("dump-chunked")
def dump_chunked(
    database: str,
    storage: str,
    staging: str,
    level: int,
    key: KeySource | None = None,
    allow_empty: bool = False,
    allow_damaged: bool = False,
) -> ops.DumpOutcome:
    """Dump ``database`` into the chunk store of ``storage``; stage one index per part.

    Chunks already in the store are not uploaded again; new ones are uploaded
    in parallel threads while the dump runs. Safe to retry: chunks are
    content-addressed and nothing points at them until the manifest. With
    ``key`` the data key is unlocked first (a wrong passphrase fails before the
    dump starts) and every chunk and index is sealed with it.
    """
    connector = resolve_database(database)
    store = resolve_storage(storage)
    data_key = load_data_key(key) if key else None
    sink = inc.chunking_sink(store, Path(staging), level, current_progress(), key=data_key)
    outcome = ops.stage_dump(connector, sink, allow_empty=allow_empty, allow_damaged=allow_damaged)
    if key:
        require_encrypted(outcome.objects)
    for obj in outcome.objects:
        if isinstance(obj, ChunkedStagedObject):
            stats = obj.chunk_stats
            get_run_logger().info(
                "Chunked %s: %s raw in %d chunks; %d new (%s uploaded), %d renewed, %d reused",
                obj.part,
                human_bytes(obj.raw_size),
                stats.chunks,
                stats.new_chunks,
                human_bytes(stats.new_bytes + stats.refreshed_bytes),
                stats.refreshed_chunks,
                stats.reused_chunks,
            )
    return outcome


@io_task("finish-incremental", ONCE)
def finish_incremental(storage: str, manifest: Manifest, staged: list[StagedObject]) -> Manifest:
    """Check the chunk-store safety rules and account sizes; the manifest to write."""
    return inc.finish_manifest(resolve_storage(storage), manifest, staged)
