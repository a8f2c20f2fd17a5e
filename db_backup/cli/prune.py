"""``db-backup prune``: show what a retention policy removes, delete with --apply."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from db_backup.cli.app import StorageOpt, app, fail, run_flow, storage_location
from db_backup.defaults import ORPHAN_GRACE
from db_backup.errors import BackupError


def _count(rule: str, what: str) -> Any:
    return typer.Option(
        f"--keep-{rule}", min=0, help=f"Keep the newest backup of the last N {what}."
    )


@app.command()
def prune(
    name: Annotated[str, typer.Option("--name", help="Backup name.")],
    keep_last: Annotated[
        int, typer.Option("--keep-last", min=0, help="Keep the N newest backups.")
    ] = 0,
    keep_hourly: Annotated[int, _count("hourly", "hours")] = 0,
    keep_daily: Annotated[int, _count("daily", "days")] = 0,
    keep_weekly: Annotated[int, _count("weekly", "ISO weeks")] = 0,
    keep_monthly: Annotated[int, _count("monthly", "months")] = 0,
    keep_yearly: Annotated[int, _count("yearly", "years")] = 0,
    keep_within: Annotated[
        str | None,
        typer.Option("--keep-within", help="Keep every backup younger than this (36h, 7d, 2w)."),
    ] = None,
    timezone: Annotated[
        str, typer.Option("--timezone", help="IANA time zone for days, weeks, months, years.")
    ] = "UTC",
    orphan_grace_hours: Annotated[
        float,
        typer.Option(
            "--orphan-grace-hours",
            min=1.0,
            help="Remove leftovers of interrupted backups only once older than this.",
        ),
    ] = ORPHAN_GRACE.total_seconds() / 3600,
    apply: Annotated[
        bool, typer.Option("--apply", help="Delete. Without it nothing is deleted (dry run).")
    ] = False,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decisions as JSON.")] = False,
) -> None:
    """Apply a retention policy: show every backup with the rules that keep it; --apply deletes."""
    from db_backup.flows.prune import prune_backups
    from db_backup.retention.flags import build_policy

    try:  # refuse a bad policy before any flow run starts
        build_policy(
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            timezone,
        )
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    report = run_flow(
        prune_backups,
        name=name,
        storage=storage_location(storage),
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        keep_within=keep_within,
        timezone=timezone,
        apply=apply,
        orphan_grace_hours=orphan_grace_hours,
    )
    for warning in report["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    from db_backup.units import human_bytes

    rows = report["rows"]
    if not rows:
        typer.echo(f"no backups named {report['name']}")
        return
    verb = "remove" if report["applied"] else "would remove"
    typer.echo(f"Policy: {report['policy']}")
    for row in rows:
        action = row["action"] if row["action"] == "keep" else verb
        typer.echo(
            f"{action:<12} {row['id']:<17} {human_bytes(row['size_bytes']):>10}  "
            + "; ".join(row["reasons"])
        )
    removing = [r for r in rows if r["action"] == "remove"]
    if report["applied"]:
        freed = human_bytes(report["freed_bytes"])
        typer.echo(f"Removed {len(report['removed'])} backup(s); {freed} freed")
    elif removing:
        typer.echo(f"Dry run: {len(removing)} item(s) would be removed; add --apply to delete")
    else:
        typer.echo("Nothing to remove")
