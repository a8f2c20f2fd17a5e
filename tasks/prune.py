"""Tasks of the prune flow: plan (read-only), apply (deletes), publish."""

from __future__ import annotations

from datetime import timedelta

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from db_backup import reports
from db_backup.blocks.resolve import resolve_storage
from db_backup.retention import prune as pruning
from db_backup.retention.policy import Policy, utcnow
from db_backup.tasks.policy import LOOKUP, ONCE, io_task


@io_task("plan-prune", LOOKUP)
def plan_prune(
    storage: str, name: str, policy: Policy, orphan_grace: timedelta
) -> pruning.PrunePlan:
    """Read the listing, manifests and check records of ``name``; decide; delete nothing."""
    logger = get_run_logger()
    plan = pruning.plan_prune(resolve_storage(storage), name, policy, utcnow(), orphan_grace)
    for warning in plan.warnings:
        logger.warning("Prune of %s: %s (its objects are left alone)", name, warning)
    for decision in plan.decisions:
        logger.info(
            "%s %s/%s: %s", decision.action, name, decision.backup_id, "; ".join(decision.reasons)
        )
    return plan


@io_task("apply-prune", ONCE)
def apply_prune(storage: str, plan: pruning.PrunePlan) -> pruning.PruneResult:
    """Delete what the plan removes (manifest first), then old orphans; run after-prune hooks.

    Not retried as a whole: every step re-checks the store, and what a failed
    deletion leaves behind has no manifest and is removed by the next prune.
    """
    result = pruning.apply_plan(resolve_storage(storage), plan)
    logger = get_run_logger()
    for error in result.errors:
        logger.error("Prune of %s: %s", plan.name, error)
    logger.info(
        "Pruned %s: %d backup(s), %d orphan(s), %d partial(s) removed",
        plan.name,
        len(result.removed),
        len(result.orphans_removed),
        len(result.partials_removed),
    )
    return result


@io_task("publish-prune-report", ONCE)
def publish_prune_report(plan: pruning.PrunePlan, result: pruning.PruneResult | None) -> None:
    """A Markdown artifact with every decision and its reasons."""
    create_markdown_artifact(
        markdown=reports.prune_markdown(plan, result),
        key=reports.artifact_key("prune", plan.name),
        description=f"Retention decisions for {plan.name}",
    )
