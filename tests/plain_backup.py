"""Backup and restore through the plain operations (no Prefect), for connector tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

from db_backup import operations as ops
from db_backup.catalog import allocate_backup_id, release_backup_id
from db_backup.connectors.base import Connector, RestoreRequest, RestoreResult, RestoreSource
from db_backup.manifest import Manifest
from db_backup.pipeline import DumpSink
from db_backup.read import download_verified
from db_backup.storage.base import Storage


def backup(connector: Connector, store: Storage, name: str, level: int = 3) -> Manifest:
    """What the backup flow does, step by step, without Prefect."""
    backup_id = allocate_backup_id(store, name)
    try:
        return _backup_as(connector, store, name, backup_id, level)
    except BaseException:
        release_backup_id(store, name, backup_id)  # as the flow's released_on_failure
        raise


def _backup_as(
    connector: Connector, store: Storage, name: str, backup_id: str, level: int
) -> Manifest:
    with tempfile.TemporaryDirectory() as staging:
        sink = DumpSink(Path(staging), level=level)
        outcome = ops.stage_dump(connector, sink)
        stored = [
            ops.upload_staged(
                store, ops.verify_staged(o), ops.object_key(name, backup_id, o.filename)
            )
            for o in outcome.objects
        ]
        manifest = ops.build_manifest(
            name=name,
            backup_id=backup_id,
            connector=connector,
            outcome=outcome,
            stored=stored,
            compression={"algorithm": "zstd", "level": level},
            flow_run_id=None,
        )
        ops.commit_manifest(store, manifest)
    return manifest


def restore(
    store: Storage,
    manifest: Manifest,
    target: Connector,
    tables: list[str] | None = None,
    force: bool = False,
) -> RestoreResult:
    """What the restore flow does, step by step, without Prefect."""
    request = RestoreRequest(tables=tables, force=force)
    target.check_target(manifest, request)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as staging:
        staged = {o.key: download_verified(store, o, Path(staging)) for o in manifest.objects}
        return target.restore(RestoreSource(manifest, staged), request)
