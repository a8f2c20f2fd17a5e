"""Tasks of the drill and verify flows: scratch target, drill, verify, records, artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from db_backup import reports
from db_backup.blocks.resolve import resolve_database, resolve_storage
from db_backup.checks import drill
from db_backup.checks.records import CheckRecord, VerifyOutcome, record_check, verify_backup_objects
from db_backup.connectors.base import Connector
from db_backup.connectors.scratch import default_scratch_base, open_scratch, scratch_label
from db_backup.crypto.keys import KeySource
from db_backup.manifest import Manifest
from db_backup.tasks.encryption import load_data_key
from db_backup.tasks.policy import LOOKUP, ONCE, io_task
from db_backup.units import human_bytes


@io_task("create-scratch", ONCE)
def create_scratch(manifest: Manifest, scratch: str | None) -> Connector:
    """Create the empty, temporary database a drill restores into (never a real one)."""
    base = resolve_database(scratch) if scratch else default_scratch_base(manifest.engine)
    target = open_scratch(base, manifest.engine, scratch_label(manifest.name, manifest.backup_id))
    get_run_logger().info("Created scratch target %s", target.describe())
    return target


@io_task("drill", ONCE)
def drill_into(
    storage: str,
    manifest: Manifest,
    target: Connector,
    staging: str,
    key: KeySource | None = None,
) -> drill.DrillReport:
    """Download (sha256-checked), restore into the scratch target, count rows, run the check.

    ``key``: the data key of an encrypted backup (see ``unlock_backup_key``).
    """
    data_key = load_data_key(key) if key else None
    report = drill.run_drill(resolve_storage(storage), manifest, target, Path(staging), data_key)
    logger = get_run_logger()
    (logger.info if report.ok else logger.error)(drill.summary_line(report))
    return report


@io_task("drop-scratch", LOOKUP, transient_only=False)
def drop_scratch(target: Connector) -> None:
    """Drop the scratch target the drill created."""
    target.drop()
    get_run_logger().info("Dropped scratch target %s", target.describe())


@io_task("record-check")
def store_check(storage: str, record: CheckRecord) -> str:
    """Write a drill or verify record next to the backup (a new object; manifests stay)."""
    key = record_check(resolve_storage(storage), record)
    get_run_logger().info(
        "Recorded %s %s for %s/%s at %s",
        record.kind,
        record.outcome,
        record.name,
        record.backup_id,
        key,
    )
    return key


@io_task("verify")
def verify_one(storage: str, manifest: Manifest, key: KeySource | None = None) -> VerifyOutcome:
    """Re-read every object of one backup; damaged objects are listed, not raised.

    ``key``: the data key of an encrypted incremental backup (its chunks are authenticated).
    """
    data_key = load_data_key(key) if key else None
    outcome = verify_backup_objects(resolve_storage(storage), manifest, data_key)
    logger = get_run_logger()
    if outcome.ok:
        logger.info(
            "Verified %s/%s: %d object(s), %s",
            manifest.name,
            manifest.backup_id,
            outcome.objects,
            human_bytes(outcome.stored_bytes),
        )
    else:
        logger.error(
            "Backup %s/%s failed verification: %s",
            manifest.name,
            manifest.backup_id,
            "; ".join(outcome.problems),
        )
    return outcome


@io_task("publish-report", ONCE)
def publish_markdown(kind: str, name: str, markdown: str, description: str) -> None:
    """A Markdown artifact keyed ``<kind>-<name>``, so the UI shows its history."""
    create_markdown_artifact(
        markdown=markdown, key=reports.artifact_key(kind, name), description=description
    )
