"""Tasks of the restore and verify flows."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from db_backup import read
from db_backup.blocks.resolve import resolve_database, resolve_storage
from db_backup.catalog import find_backup, list_backups
from db_backup.connectors.base import RestoreRequest, RestoreResult
from db_backup.crypto.keys import KeySource
from db_backup.manifest import Manifest, StoredObject
from db_backup.tasks.encryption import load_data_key
from db_backup.tasks.policy import LOOKUP, ONCE, io_task
from db_backup.units import human_bytes


@io_task("find-backup", LOOKUP)
def find_manifest(storage: str, name: str, backup: str) -> Manifest:
    """The manifest of ``backup`` (an id or 'latest'); BackupNotFound otherwise."""
    return find_backup(resolve_storage(storage), name, backup)


@io_task("list-backups", LOOKUP)
def list_manifests(storage: str, name: str) -> list[Manifest]:
    """Every complete backup of ``name``, oldest first."""
    logger = get_run_logger()
    return list_backups(
        resolve_storage(storage), name, on_skip=lambda k, e: logger.warning("Skipped %s: %s", k, e)
    )


@io_task("download")
def download_object(
    storage: str, obj: StoredObject, staging: str, key: KeySource | None = None
) -> Path:
    """Download one object to staging and check size and sha256 against the manifest.

    An encrypted incremental object is rebuilt with the data key ``key`` names:
    every chunk is authenticated and decrypted here, before any restore step.
    """
    store = resolve_storage(storage)
    data_key = load_data_key(key) if key and obj.chunked and obj.encrypted else None
    path = read.download_verified(store, obj, Path(staging), data_key)
    get_run_logger().info(
        "Downloaded and verified %s (%s, sha256 %s…)",
        obj.key,
        human_bytes(obj.size),
        obj.sha256[:12],
    )
    return path


@io_task("check-target", ONCE)
def check_target(
    target: str,
    manifest: Manifest,
    tables: list[str] | None,
    force: bool,
    options: dict[str, object] | None = None,
) -> None:
    """Refuse early, before any download, a restore that could not proceed."""
    connector = resolve_database(target)
    request = RestoreRequest(tables=tables, force=force, options=dict(options or {}))
    connector.check_target(manifest, request)


@io_task("restore", ONCE)
def restore_objects(
    target: str,
    manifest: Manifest,
    staged: dict[str, Path],
    tables: list[str] | None,
    force: bool,
    options: dict[str, object] | None = None,
    key: KeySource | None = None,
) -> RestoreResult:
    """Restore verified, staged objects into ``target`` (never retried: not idempotent).

    With ``key`` (an encrypted backup), every object is first decrypted once
    and authenticated, so a tampered object fails before the target is touched.
    """
    connector = resolve_database(target)
    data_key = load_data_key(key) if key and read.whole_sealed_objects(manifest) else None
    source = read.restore_source(manifest, staged, data_key)
    request = RestoreRequest(tables=tables, force=force, options=dict(options or {}))
    result = connector.restore(source, request)
    get_run_logger().info(
        "Restored %s/%s into %s (%d table(s))",
        manifest.name,
        manifest.backup_id,
        connector.describe(),
        len(result.tables),
    )
    return result
