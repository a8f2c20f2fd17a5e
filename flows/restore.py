"""The restore and verify flows."""

from __future__ import annotations

from pathlib import Path

from db_backup.flows.common import DEFAULT_STORAGE, staging_dir
from db_backup.tasks.restore import (
    check_target,
    download_object,
    find_manifest,
    list_manifests,
    restore_objects,
    verify_objects,
)
from prefect import flow, get_run_logger

from db_backup.manifest import check_name


@flow(name="restore-database", flow_run_name="restore-{name}-{backup}")
def restore_database(
    name: str,
    target: str,
    backup: str = "latest",
    storage: str = DEFAULT_STORAGE,
    tables: list[str] | None = None,
    force: bool = False,
    options: dict[str, object] | None = None,
) -> dict[str, object]:
    """Restore backup ``backup`` of ``name`` into ``target``.

    Every object is downloaded and its sha256 checked **before** the target is
    touched; a target that holds data is refused unless ``force`` is true.
    ``tables`` restores only those tables (with their indexes and triggers).
    """
    check_name(name)
    manifest = find_manifest(storage, name, backup)
    check_target(target, manifest, tables, force, options)
    with staging_dir("restore") as staging:
        staged: dict[str, Path] = {}
        for obj in manifest.objects:
            staged[obj.key] = download_object(storage, obj, str(staging))
        result = restore_objects(target, manifest, staged, tables, force, options)
    get_run_logger().info("Restore of %s/%s complete", name, manifest.backup_id)
    return {"backup_id": manifest.backup_id, "target": result.target, "tables": result.tables}


@flow(name="verify-backup", flow_run_name="verify-{name}-{backup}")
def verify_backup(
    name: str,
    backup: str = "latest",
    storage: str = DEFAULT_STORAGE,
    all_backups: bool = False,
) -> list[str]:
    """Re-read the objects of a backup (or every backup of ``name``) and check them.

    Fails the run when any object is missing, truncated or altered, so the
    Failed-state automations fire.
    """
    check_name(name)
    manifests = (
        list_manifests(storage, name) if all_backups else [find_manifest(storage, name, backup)]
    )
    if not manifests:
        from db_backup.errors import BackupNotFound

        raise BackupNotFound(f"no backups named {name!r} in {storage}")
    for manifest in manifests:
        verify_objects(storage, manifest)
    return [m.backup_id for m in manifests]
