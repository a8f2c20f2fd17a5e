"""Publishing the backup report (rendered by :mod:`db_backup.reports`) as a Prefect artifact."""

from __future__ import annotations

from db_backup.manifest import Manifest
from db_backup.reports import backup_artifact_key, backup_markdown


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
            markdown=backup_markdown(manifest, location),
            key=backup_artifact_key(manifest.name),
            description=f"Backup {manifest.name}/{manifest.backup_id}",
        )
    except Exception as exc:  # the backup itself succeeded
        logger.warning("Could not publish the backup report artifact: %s", exc)
