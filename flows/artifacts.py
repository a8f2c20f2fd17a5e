"""The backup report each backup run publishes as a Prefect artifact."""

from __future__ import annotations

import re

from db_backup.manifest import Manifest, backup_prefix
from db_backup.units import human_bytes


def artifact_key(name: str) -> str:
    """The artifact key for backups of ``name`` (lowercase letters, digits and dashes)."""
    return "backup-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unnamed")


def report_rows(manifest: Manifest, location: str) -> list[tuple[str, str]]:
    """The facts of one finished backup, as (field, value) rows."""
    seconds = max((manifest.finished_at - manifest.started_at).total_seconds(), 0.0)
    raw, stored = manifest.logical_bytes, manifest.stored_bytes
    ratio = f"{raw / stored:.2f}x" if stored else "n/a"
    speed = f"{human_bytes(int(raw / seconds))}/s" if seconds > 0 else "n/a"
    return [
        ("Database", f"{manifest.name} ({manifest.engine}: {manifest.source})"),
        ("Backup id", manifest.backup_id),
        ("Raw size", f"{human_bytes(raw)} ({raw} bytes)"),
        ("Stored size", f"{human_bytes(stored)} ({stored} bytes)"),
        ("Compression ratio", ratio),
        ("Duration", f"{seconds:.1f} s"),
        ("Throughput (raw)", speed),
        ("Tables", str(len(manifest.tables))),
        ("Storage location", f"{location}/{backup_prefix(manifest.name, manifest.backup_id)}"),
    ]


def report_markdown(manifest: Manifest, location: str) -> str:
    """A markdown table of :func:`report_rows`, with a title naming the backup."""
    lines = [
        f"### Backup {manifest.name}/{manifest.backup_id}",
        "",
        "| Field | Value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_cell(v)} |" for k, v in report_rows(manifest, location)]
    return "\n".join(lines) + "\n"


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def publish_backup_report(storage: str, manifest: Manifest) -> None:
    """Publish the report of a committed backup as a markdown artifact of this run.

    The backup is already committed when this runs: a report that cannot be
    published is logged as a warning and never fails the run.
    """
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    from db_backup.blocks.resolve import resolve_storage

    logger = get_run_logger()
    try:
        location = resolve_storage(storage).describe()
        create_markdown_artifact(
            markdown=report_markdown(manifest, location),
            key=artifact_key(manifest.name),
            description=f"Backup {manifest.name}/{manifest.backup_id}",
        )
    except Exception as exc:  # the backup itself succeeded
        logger.warning("Could not publish the backup report artifact: %s", exc)
