"""The restore and verify flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from db_backup import reports
from db_backup.checks.records import VerifyOutcome, verify_record
from db_backup.crypto.keys import KeySource
from db_backup.defaults import DEFAULT_STORAGE
from db_backup.errors import BackupNotFound, VerificationFailed
from db_backup.flows.alerting import alerting_flow
from db_backup.flows.common import current_flow_run_id
from db_backup.manifest import Manifest, check_name
from db_backup.staging import staging_dir
from db_backup.tasks.drill import publish_markdown, store_check, verify_one
from db_backup.tasks.encryption import unlock_backup_key
from db_backup.tasks.restore import (
    check_target,
    download_object,
    find_manifest,
    list_manifests,
    restore_objects,
)


@alerting_flow("restore-database", flow_run_name="restore-{name}-{backup}")
def restore_database(
    name: str,
    target: str,
    backup: str = "latest",
    storage: str = DEFAULT_STORAGE,
    tables: list[str] | None = None,
    force: bool = False,
    options: dict[str, object] | None = None,
    passphrase_secret: str | None = None,
) -> dict[str, object]:
    """Restore backup ``backup`` of ``name`` into ``target``.

    Every object is downloaded and its sha256 checked **before** the target is
    touched; a target that holds data is refused unless ``force`` is true.
    ``tables`` restores only those tables (with their indexes and triggers).
    An encrypted backup (see its manifest) needs the passphrase (Secret block
    ``passphrase_secret`` or ``$DB_BACKUP_PASSPHRASE``); a wrong one fails here,
    before anything else.
    """
    check_name(name)
    manifest = find_manifest(storage, name, backup)
    key = unlock_backup_key(storage, manifest, passphrase_secret)
    check_target(target, manifest, tables, force, options)
    with staging_dir("restore") as staging:
        staged: dict[str, Path] = {}
        for obj in manifest.objects:
            staged[obj.key] = download_object(storage, obj, str(staging), key=key)
        result = restore_objects(target, manifest, staged, tables, force, options, key=key)
    damaged = manifest.extra.get("damaged")
    if damaged:
        get_run_logger().warning(
            "Backup %s/%s was taken of a damaged database (%s): restored as it is",
            name,
            manifest.backup_id,
            damaged,
        )
    get_run_logger().info("Restore of %s/%s complete", name, manifest.backup_id)
    return {
        "backup_id": manifest.backup_id,
        "target": result.target,
        "tables": result.tables,
        "damaged": damaged,
    }


@alerting_flow("verify-backup", flow_run_name="verify-{name}-{backup}")
def verify_backup(
    name: str,
    backup: str = "latest",
    storage: str = DEFAULT_STORAGE,
    all_backups: bool = False,
    passphrase_secret: str | None = None,
) -> list[str]:
    """Re-read the objects of a backup (or every backup of ``name``) and check them.

    With ``all_backups`` every backup is verified even after one fails. Each
    result is recorded next to its backup and the run publishes a Markdown
    artifact; the run fails naming **every** damaged backup, so the
    Failed-state automations fire. An encrypted incremental backup is read
    with its data key (passphrase: Secret block ``passphrase_secret`` or
    ``$DB_BACKUP_PASSPHRASE``), unlocked first: a wrong passphrase fails the run.
    """
    check_name(name)
    manifests = (
        list_manifests(storage, name) if all_backups else [find_manifest(storage, name, backup)]
    )
    if not manifests:
        raise BackupNotFound(f"no backups named {name!r} in {storage}")
    unlocked: dict[str, KeySource | None] = {}
    outcomes = [
        _verify_and_record(
            storage, m, all_backups, _verify_key(storage, m, passphrase_secret, unlocked)
        )
        for m in manifests
    ]
    publish_markdown(
        "verify", name, reports.verify_markdown(name, storage, outcomes), f"Verify of {name}"
    )
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise VerificationFailed(_failure_message(name, failed, len(outcomes)))
    return [m.backup_id for m in manifests]


def _verify_key(
    storage: str, manifest: Manifest, secret: str | None, unlocked: dict[str, KeySource | None]
) -> KeySource | None:
    """The key an encrypted incremental backup needs, unlocked once per key id per run.

    Encrypted full backups are verified without it (their stored bytes carry a sha256).
    """
    if not any(o.chunked and o.encrypted for o in manifest.objects) or manifest.encryption is None:
        return None
    key_id = str(manifest.encryption.get("key_id"))
    if key_id not in unlocked:
        unlocked[key_id] = unlock_backup_key(storage, manifest, secret)
    return unlocked[key_id]


def _verify_and_record(
    storage: str, manifest: Manifest, keep_going: bool, key: KeySource | None = None
) -> VerifyOutcome:
    """Verify one backup and record the verdict.

    An error that is no verdict on the backup (store unreachable) is raised as
    is, or with ``keep_going`` listed as a failure so the other backups still
    get verified; it is never recorded.
    """
    state = verify_one(storage, manifest, key=key, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException) and not keep_going:
        raise outcome
    if not isinstance(outcome, VerifyOutcome):
        return VerifyOutcome(
            manifest.backup_id,
            len(manifest.objects),
            manifest.stored_bytes,
            [f"could not be verified: {outcome}"],
        )
    record = state_of(
        store_check(
            storage, verify_record(manifest, outcome, current_flow_run_id()), return_state=True
        )
    )
    if record:
        get_run_logger().warning(
            "Verify result of %s/%s not recorded: %s", manifest.name, manifest.backup_id, record
        )
    return outcome


def state_of(state: Any) -> str:
    """'' for a completed task state, else the error it failed with."""
    return "" if state.is_completed() else str(state.result(raise_on_failure=False))


def _failure_message(name: str, failed: list[VerifyOutcome], total: int) -> str:
    if total == 1:
        return f"backup {name}/{failed[0].backup_id} failed verification: {failed[0].problems[0]}"
    listed = "; ".join(f"{o.backup_id}: {o.problems[0]}" for o in failed)
    return f"{len(failed)} of {total} backups of {name} failed verification: {listed}"
