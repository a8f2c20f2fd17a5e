"""``db-backup export`` and ``db-backup gc``: the chunk store's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from db_backup.cli.app import PassphraseSecretOpt, StorageOpt, app, fail, storage_location
from db_backup.defaults import GC_GRACE_TEXT
from db_backup.errors import BackupError
from db_backup.parsing import WINDOW_UNITS, parse_duration


@app.command()
def export(
    backup: Annotated[str, typer.Argument(help="Backup id or 'latest'.")],
    name: Annotated[str, typer.Option("--name", help="Backup name.")],
    to: Annotated[
        Path, typer.Option("--to", help="File to write (a directory for multi-part backups).")
    ],
    storage: StorageOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    passphrase_secret: PassphraseSecretOpt = None,
) -> None:
    """Write a backup (full or incremental) as the plain dump file the database tool made.

    An encrypted backup is decrypted with the passphrase ($DB_BACKUP_PASSPHRASE
    or --passphrase-secret); a wrong one fails before anything is written.
    """
    from db_backup.blocks.passphrase import load_passphrase
    from db_backup.blocks.resolve import resolve_storage
    from db_backup.catalog import find_backup
    from db_backup.crypto.keys import backup_key_id, unlock_key
    from db_backup.export import export_backup
    from db_backup.units import human_bytes

    try:
        store = resolve_storage(storage_location(storage))
        manifest = find_backup(store, name, backup)
        key_id = backup_key_id(manifest)
        key = None
        if key_id is not None:
            what = f"export of encrypted backup {name}/{manifest.backup_id}"
            key = unlock_key(store, key_id, load_passphrase(passphrase_secret, what))
        files = export_backup(store, manifest, to, force, key)
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    typer.echo(
        f"Exported {name}/{manifest.backup_id} ({manifest.mode}, "
        f"{human_bytes(manifest.logical_bytes)}, sha256 checked) to "
        + ", ".join(str(f) for f in files)
    )


@app.command()
def gc(
    storage: StorageOpt = None,
    grace: Annotated[
        str,
        typer.Option(
            "--grace", help=f"Keep unreferenced chunks younger than this (>= {GC_GRACE_TEXT})."
        ),
    ] = GC_GRACE_TEXT,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only; delete nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    passphrase_secret: PassphraseSecretOpt = None,
    leftovers: Annotated[
        bool,
        typer.Option(
            "--leftovers",
            help="Instead of chunks: remove what killed runs left behind (staging folders, "
            "SQLite restore files in --in folders, PostgreSQL scratch databases on --server).",
        ),
    ] = False,
    folders: Annotated[
        list[Path] | None,
        typer.Option("--in", help="With --leftovers: a folder holding SQLite restore targets."),
    ] = None,
    servers: Annotated[
        list[str] | None,
        typer.Option("--server", help="With --leftovers: a PostgreSQL server URL to check."),
    ] = None,
) -> None:
    """Delete chunks of incremental backups that no backup references any more.

    Encrypted incremental backups' indexes are read with the passphrase
    ($DB_BACKUP_PASSPHRASE or --passphrase-secret); without one, the chunks of
    keys still in use are all kept (a warning says so).

    With --leftovers, gc removes instead what killed runs left behind: staging
    folders in $DB_BACKUP_STAGING or the temp dir, hidden `.<target>.restore-*`
    files next to SQLite targets in each --in folder, `*_dbb_*` scratch databases
    on each --server; only those whose process is gone (or, made on another
    host or by an older db-backup, older than a day). A running backup's or
    restore's files are never removed. --dry-run lists only.
    """
    if leftovers:
        _gc_leftovers(folders or [], servers or [], dry_run, as_json)
        return
    from db_backup.blocks.passphrase import load_passphrase
    from db_backup.blocks.resolve import resolve_storage
    from db_backup.chunks.gc import collect_garbage
    from db_backup.crypto.keys import passphrase_from_env
    from db_backup.units import human_bytes

    try:
        window = parse_duration(grace, WINDOW_UNITS)
        passphrase = (
            load_passphrase(passphrase_secret, "gc") if passphrase_secret else passphrase_from_env()
        )
        report = collect_garbage(
            resolve_storage(storage_location(storage)),
            window,
            dry_run=dry_run,
            passphrase=passphrase,
        )
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    for problem in report.problems:
        typer.echo(f"warning: {problem}", err=True)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{report.chunks} chunk(s) ({human_bytes(report.chunk_bytes)}) in {report.backups} "
        f"backup(s): {report.live_chunks} in use, {verb} {report.deleted_chunks} "
        f"({human_bytes(report.deleted_bytes)}), kept {report.kept_young_chunks} younger "
        "than the grace period"
        + (
            f" and {report.kept_locked_chunks} of encrypted backups (no passphrase)"
            if report.kept_locked_chunks
            else ""
        )
    )


def _gc_leftovers(folders: list[Path], servers: list[str], dry_run: bool, as_json: bool) -> None:
    from db_backup.cli import leftovers as cli_leftovers

    try:
        found = cli_leftovers.find_all(folders, servers, dry_run)
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    cli_leftovers.report(found, dry_run, as_json)
