"""``db-backup apply FLEET.yaml [--dry-run]``: blocks, deployments, schedules, automations.

Everything is checked first (the file, then what it refers to on the server);
a file with a problem is refused with ``file:line: reason`` lines and nothing
is created. The plan is printed before anything changes; ``--dry-run`` stops
there. A second apply of the same file changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from db_backup.cli.app import app, fail, state
from db_backup.errors import BackupError


def _report_problems(exc: BackupError) -> None:
    problems: list[str] = list(getattr(exc, "problems", None) or [])
    if not problems:
        fail(str(exc), exc.exit_code)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    fail(f"{len(problems)} problem(s) in the fleet file; nothing was changed", exc.exit_code)


@app.command("apply")
def apply_cmd(
    fleet_file: Annotated[Path, typer.Argument(help="Fleet file (YAML).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
) -> None:
    """Create or update blocks, deployments, schedules and Slack automations from a fleet file."""
    from db_backup.cli.env import quiet_prefect_console
    from db_backup.deployments.apply import apply_plan, check_fleet, plan_fleet
    from db_backup.deployments.fleet import load_fleet

    quiet_prefect_console(state["verbose"])
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            fail(
                "apply needs a Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
            )
    try:
        loaded = load_fleet(fleet_file)
        from prefect import get_client

        with get_client(sync_client=True) as client:
            check_fleet(loaded, client)
            plan = plan_fleet(loaded, client)
            for change in plan.changes:
                typer.echo(change.describe())
            typer.echo(plan.summary())
            if dry_run:
                typer.echo("Dry run: nothing was changed.")
                return
            if not plan.pending:
                typer.echo("Nothing to change.")
                return
            count = apply_plan(plan, report=typer.echo)
    except BackupError as exc:
        _report_problems(exc)
        return
    typer.echo(f"Applied {count} change(s).")
