"""``db-backup gc --leftovers``: what killed runs left on this machine and its servers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from db_backup import leftovers
from db_backup.errors import ConfigError
from db_backup.units import human_bytes


def find_all(folders: list[Path], servers: list[str], dry_run: bool) -> list[leftovers.Leftover]:
    """Every leftover in the staging folder, in ``folders`` (SQLite restore files) and on
    ``servers`` (PostgreSQL scratch databases); the stale ones removed unless ``dry_run``."""
    found = leftovers.find_staging(leftovers.staging_base())
    for folder in folders:
        found += leftovers.find_restore_files(folder.resolve())
    if not dry_run:
        leftovers.sweep(found)
    for url in servers:
        found += _scratch_databases(url, dry_run)
    return found


def _scratch_databases(url: str, dry_run: bool) -> list[leftovers.Leftover]:
    from db_backup.connectors import connector_from_url
    from db_backup.connectors.postgres.logical import PostgresConnector

    connector = connector_from_url(url)
    if not isinstance(connector, PostgresConnector):
        raise ConfigError(
            f"--server {connector.describe()}: only PostgreSQL restores make scratch databases"
        )
    return connector.sweep_scratch_databases(dry_run=dry_run)


def report(found: list[leftovers.Leftover], dry_run: bool, as_json: bool) -> None:
    """One line per leftover (or JSON): what was removed, what is kept and why."""
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "leftovers": [asdict(f) for f in found]}))
        return
    verb = "would remove" if dry_run else "removed"
    for item in found:
        size = f" ({human_bytes(item.size)})" if item.size else ""
        done = verb if item.stale else "kept"
        typer.echo(f"{done} {item.kind} {item.where}{size}: {item.reason}")
    stale = sum(1 for f in found if f.stale)
    typer.echo(f"{len(found)} leftover(s): {verb} {stale}, kept {len(found) - stale}")
