"""Make real backups in a store without Prefect, with the same steps as the backup flow.

``make_backup`` runs dump -> stage (sha256 + zstd) -> upload -> manifest last, exactly as
``backup_database`` does through its tasks, so tests can date backups in the past and
pause between the objects and the manifest (a backup "being written").
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from db_backup import operations as ops
from db_backup.catalog import allocate_backup_id
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.crypto.stream import DataKey
from db_backup.errors import BackupError
from db_backup.manifest import Manifest, backup_prefix, new_backup_id
from db_backup.pipeline import DumpSink
from db_backup.storage.base import ObjectInfo, Storage


def make_backup(
    storage: Storage,
    name: str,
    database: Path,
    when: datetime | None = None,
    before_manifest: Callable[[str], None] | None = None,
) -> Manifest:
    """Back up the SQLite file ``database`` as ``name`` (dated ``when``, default now)."""
    connector = SqliteConnector(database)
    backup_id = new_backup_id(when) if when else allocate_backup_id(storage, name)
    with tempfile.TemporaryDirectory(prefix="db-backup-test-") as staging:
        outcome = ops.stage_dump(connector, DumpSink(Path(staging), level=1))
        if when is not None:
            outcome = replace(outcome, started_at=when)
        stored = [
            ops.upload_staged(storage, obj, ops.object_key(name, backup_id, obj.filename))
            for obj in outcome.objects
        ]
        if before_manifest is not None:
            before_manifest(backup_id)
        manifest = ops.build_manifest(
            name=name,
            backup_id=backup_id,
            connector=connector,
            outcome=outcome,
            stored=stored,
            compression={"algorithm": "zstd", "level": 1},
            flow_run_id=None,
        )
        ops.commit_manifest(storage, manifest)
    return manifest


def read_artifact(key: str) -> str:
    """The newest Prefect artifact with ``key`` (needs the ``prefect_api`` fixture)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)


def objects_of(storage: Storage, name: str, backup_id: str) -> list[ObjectInfo]:
    """Every object stored under one backup's prefix, manifest included."""
    return list(storage.list(backup_prefix(name, backup_id)))


def verify_manifest_objects(
    storage: Storage, manifest: Manifest, key: DataKey | None = None
) -> list[str]:
    """Verify every object of a backup; return the problems (empty when all are good)."""
    problems: list[str] = []
    for obj in manifest.objects:
        try:
            ops.verify_stored(storage, obj, key)
        except BackupError as exc:
            problems.append(str(exc))
    return problems
