"""Task wrapping chunk garbage collection (the prune flow calls it after deleting manifests)."""

from __future__ import annotations

from datetime import timedelta

from prefect import get_run_logger

from db_backup.blocks.passphrase import load_passphrase
from db_backup.blocks.resolve import resolve_storage
from db_backup.chunks.gc import collect_garbage
from db_backup.crypto.keys import passphrase_from_env
from db_backup.defaults import GC_GRACE_HOURS
from db_backup.tasks.policy import io_task
from db_backup.units import human_bytes

DEFAULT_GRACE_HOURS = GC_GRACE_HOURS


@io_task("collect-chunk-garbage")
def collect_chunk_garbage(
    storage: str,
    grace_hours: float = DEFAULT_GRACE_HOURS,
    dry_run: bool = False,
    passphrase_secret: str | None = None,
) -> dict[str, object]:
    """Delete chunks no live backup references (safe with backups running; safe to rerun).

    Encrypted incremental backups' indexes are read with the passphrase (Secret
    block ``passphrase_secret``, else ``$DB_BACKUP_PASSPHRASE`` when set); without
    one, the chunks of keys still in use are kept and a warning is logged.
    """
    passphrase = (
        load_passphrase(passphrase_secret, "chunk GC")
        if passphrase_secret
        else passphrase_from_env()
    )
    report = collect_garbage(
        resolve_storage(storage),
        timedelta(hours=grace_hours),
        dry_run=dry_run,
        passphrase=passphrase,
    )
    for problem in report.problems:
        get_run_logger().warning("Chunk GC of %s: %s", storage, problem)
    get_run_logger().info(
        "Chunk GC of %s: %d chunk(s), %d in use, %s %d (%s), %d kept as younger than grace",
        storage,
        report.chunks,
        report.live_chunks,
        "would delete" if dry_run else "deleted",
        report.deleted_chunks,
        human_bytes(report.deleted_bytes),
        report.kept_young_chunks,
    )
    return report.as_dict()
