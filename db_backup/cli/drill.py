"""``db-backup drill``: restore a backup into a scratch database and prove it is whole."""

from __future__ import annotations

from typing import Annotated

import typer

from db_backup.cli.app import PassphraseSecretOpt, StorageOpt, app, run_flow, storage_location


@app.command()
def drill(
    backup: Annotated[str, typer.Argument(help="Backup id or 'latest'.")] = "latest",
    name: Annotated[str, typer.Option("--name", help="Backup name.")] = ...,  # type: ignore[assignment]
    scratch: Annotated[
        str | None,
        typer.Option(
            "--scratch",
            help="Server for the temporary database: URL or block (SQLite: a directory; "
            "default the system temporary directory).",
        ),
    ] = None,
    storage: StorageOpt = None,
    passphrase_secret: PassphraseSecretOpt = None,
) -> None:
    """Restore into a temporary database, compare row counts, run the engine check, drop it.

    An encrypted backup needs the passphrase ($DB_BACKUP_PASSPHRASE or --passphrase-secret).
    """
    from db_backup.flows.drill import drill_backup

    result = run_flow(
        drill_backup,
        name=name,
        backup=backup,
        storage=storage_location(storage),
        scratch=scratch,
        passphrase_secret=passphrase_secret,
    )
    typer.echo(result["summary"])
