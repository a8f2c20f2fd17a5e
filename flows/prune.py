"""The prune flow: retention decisions from the store's manifests, deletions only when asked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import get_run_logger

from db_backup import reports
from db_backup.defaults import DEFAULT_STORAGE, ORPHAN_GRACE
from db_backup.errors import StorageError
from db_backup.flows.alerting import alerting_flow
from db_backup.manifest import check_name
from db_backup.retention.flags import build_policy
from db_backup.tasks.gc import collect_chunk_garbage
from db_backup.tasks.prune import apply_prune, plan_prune, publish_prune_report


@alerting_flow("prune-backups", flow_run_name="prune-{name}")
def prune_backups(
    name: str,
    storage: str = DEFAULT_STORAGE,
    keep_last: int = 0,
    keep_hourly: int = 0,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    keep_yearly: int = 0,
    keep_within: str | None = None,
    timezone: str = "UTC",
    apply: bool = False,
    orphan_grace_hours: float = ORPHAN_GRACE.total_seconds() / 3600,
    collect_chunks: bool = True,
) -> dict[str, Any]:
    """Apply a retention policy to the backups of ``name``.

    Shows (logs and a Markdown artifact) what would be deleted and which rule
    keeps each backup; deletes only when ``apply`` is true (the scheduled
    deployment passes it). The newest successful backup is never removed, a
    policy that keeps nothing is refused, and orphans of interrupted backups
    are removed only once older than ``orphan_grace_hours``. Fails the run when
    any deletion failed. With ``apply`` and ``collect_chunks``, chunks of
    incremental backups that no remaining backup references are then
    garbage-collected (only those older than the GC grace period, so a backup
    running right now keeps its chunks).
    """
    check_name(name)
    policy = build_policy(
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        keep_within,
        timezone,
    )
    plan = plan_prune(storage, name, policy, timedelta(hours=orphan_grace_hours))
    result = apply_prune(storage, plan) if apply else None
    chunk_gc = collect_chunk_garbage(storage) if apply and collect_chunks else None
    publish_prune_report(plan, result)
    report = {
        "name": name,
        "applied": apply,
        "policy": policy.describe(),
        "rows": reports.prune_rows(plan),
        "warnings": plan.warnings,
        "removed": result.removed if result else [],
        "errors": result.errors if result else [],
        "freed_bytes": result.freed_bytes if result else 0,
        "chunk_gc": chunk_gc,
    }
    if result and result.errors:
        raise StorageError(
            f"prune of {name} could not delete {len(result.errors)} object(s): {result.errors[0]}"
        )
    get_run_logger().info("Prune of %s done (%s)", name, "applied" if apply else "dry run")
    return report
