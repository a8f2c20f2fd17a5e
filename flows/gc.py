"""The chunk garbage-collection flow (incremental backups' shared chunk store)."""

from __future__ import annotations

from prefect import flow

from db_backup.flows.common import DEFAULT_STORAGE
from db_backup.tasks.gc import DEFAULT_GRACE_HOURS, collect_chunk_garbage


@flow(name="gc-chunks", flow_run_name="gc-chunks")
def gc_chunks(
    storage: str = DEFAULT_STORAGE, grace_hours: float = DEFAULT_GRACE_HOURS, dry_run: bool = False
) -> dict[str, object]:
    """Delete chunks that no backup references and that are older than ``grace_hours``.

    Run it after prune; it is safe while backups run (docs/incremental.md).
    """
    return collect_chunk_garbage(storage, grace_hours, dry_run)
