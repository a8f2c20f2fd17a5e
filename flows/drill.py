"""The restore-drill flow: prove a backup restores, and record the proof next to it."""

from __future__ import annotations

from typing import Any

from db_backup import reports
from db_backup.checks.drill import summary_line
from db_backup.defaults import DEFAULT_STORAGE
from db_backup.errors import DrillFailed
from db_backup.flows.alerting import alerting_flow
from db_backup.flows.common import current_flow_run_id
from db_backup.manifest import check_name
from db_backup.staging import staging_dir
from db_backup.tasks.drill import (
    create_scratch,
    drill_into,
    drop_scratch,
    publish_markdown,
    store_check,
)
from db_backup.tasks.encryption import unlock_backup_key
from db_backup.tasks.restore import find_manifest


@alerting_flow("drill-backup", flow_run_name="drill-{name}-{backup}")
def drill_backup(
    name: str,
    backup: str = "latest",
    storage: str = DEFAULT_STORAGE,
    scratch: str | None = None,
    passphrase_secret: str | None = None,
) -> dict[str, Any]:
    """Restore ``backup`` of ``name`` into a scratch database and check it.

    ``scratch`` names the server (database URL or block; for SQLite a
    directory) on which a temporary database is created; SQLite defaults to
    the system temporary directory. The drill compares per-table row counts
    with the manifest, runs the engine's integrity check, drops the scratch
    database whatever happens, and records the result next to the backup.
    A failed drill fails the run (so the Failed-state automations fire); a
    scratch database that cannot be created fails it before anything is
    restored or recorded. An encrypted backup needs the passphrase (Secret block
    ``passphrase_secret`` or ``$DB_BACKUP_PASSPHRASE``), like a restore; without
    it the run fails before the scratch database is created and records nothing.
    """
    check_name(name)
    manifest = find_manifest(storage, name, backup)
    data_key = unlock_backup_key(storage, manifest, passphrase_secret)
    target = create_scratch(manifest, scratch)
    try:
        with staging_dir("drill") as staging:
            report = drill_into(storage, manifest, target, str(staging), key=data_key)
    finally:
        drop_scratch(target)
    key = store_check(storage, report.record(current_flow_run_id()))
    publish_markdown(
        "drill",
        name,
        reports.drill_markdown(report),
        f"Restore drill of {name}/{manifest.backup_id}",
    )
    if not report.ok:
        raise DrillFailed(summary_line(report))
    return {
        "backup_id": manifest.backup_id,
        "ok": report.ok,
        "tables": report.tables,
        "record": key,
        "summary": summary_line(report),
    }
