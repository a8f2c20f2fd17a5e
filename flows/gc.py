"""The chunk garbage-collection flow (incremental backups' shared chunk store)."""

from __future__ import annotations

from db_backup.defaults import DEFAULT_STORAGE, GC_GRACE_HOURS
from db_backup.flows.alerting import alerting_flow
from db_backup.tasks.gc import collect_chunk_garbage


@alerting_flow("gc-chunks", alerts=False, flow_run_name="gc-chunks")
def gc_chunks(
    storage: str = DEFAULT_STORAGE, grace_hours: float = GC_GRACE_HOURS, dry_run: bool = False
) -> dict[str, object]:
    """Delete chunks that no backup references and that are older than ``grace_hours``.

    Run it after prune; it is safe while backups run (docs/incremental.md).
    """
    return collect_chunk_garbage(storage, grace_hours, dry_run)
