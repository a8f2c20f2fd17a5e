"""``db-backup drill``: restore a backup into a scratch database and prove it is whole."""

from __future__ import annotations

from typing import Annotated

import typer

from db_backup.cli.app import (
    PassphraseSecretOpt,
    StorageOpt,
    app,
    fail,
    run_flow,
    storage_location,
)
from db_backup.errors import ConfigError
from db_backup.parsing import refuse_url_secrets


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

    try:
        refuse_url_secrets(scratch or "", "scratch URL")
    except ConfigError as exc:
        fail(str(exc), exc.exit_code)
    result = run_flow(
        drill_backup,
        name=name,
        backup=backup,
        storage=storage_location(storage),
        scratch=scratch,
        passphrase_secret=passphrase_secret,
    )
    typer.echo(result["summary"])
