"""Run incremental backups through the plain steps (no Prefect), as the flow does."""

from __future__ import annotations

from pathlib import Path

from db_backup import operations as ops
from db_backup.catalog import allocate_backup_id
from db_backup.chunks import incremental as inc
from db_backup.chunks.chunking import ChunkParams
from db_backup.chunks.index import ChunkPolicy
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.manifest import Manifest
from db_backup.storage.base import Storage


def stage(
    storage: Storage, db: Path, staging: Path, params: ChunkParams | None = None
) -> ops.DumpOutcome:
    """The dump step: chunks go to the store, one index per part is staged."""
    staging.mkdir(parents=True, exist_ok=True)
    sink = inc.chunking_sink(storage, staging, params=params)
    return ops.stage_dump(SqliteConnector(db), sink)


def commit(
    storage: Storage,
    db: Path,
    outcome: ops.DumpOutcome,
    name: str = "shop",
    policy: ChunkPolicy | None = None,
) -> Manifest:
    """The upload, safety-check and manifest steps."""
    backup_id = allocate_backup_id(storage, name)
    stored = [
        ops.upload_staged(
            storage, ops.verify_staged(o), ops.object_key(name, backup_id, o.filename)
        )
        for o in outcome.objects
    ]
    manifest = ops.build_manifest(
        name=name,
        backup_id=backup_id,
        connector=SqliteConnector(db),
        outcome=outcome,
        stored=stored,
        compression={"algorithm": "zstd", "level": 3},
        flow_run_id=None,
    )
    manifest = inc.finish_manifest(storage, manifest, outcome.objects, policy)
    ops.commit_manifest(storage, manifest)
    return manifest


def plain_backup(
    storage: Storage,
    db: Path,
    staging: Path,
    name: str = "shop",
    params: ChunkParams | None = None,
) -> Manifest:
    """One incremental backup of a SQLite file: chunks, index, manifest last."""
    return commit(storage, db, stage(storage, db, staging, params), name)
