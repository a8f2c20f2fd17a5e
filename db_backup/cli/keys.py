"""``db-backup key list`` and ``db-backup key rotate``: the store's encryption keys.

Passphrases are read from the environment, a Prefect Secret block or a hidden
prompt, never from a command-line argument (other users can read those).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from db_backup.cli.app import PassphraseSecretOpt, StorageOpt, app, fail, storage_location
from db_backup.crypto.keys import NEW_PASSPHRASE_ENV
from db_backup.errors import BackupError, ConfigError

key_app = typer.Typer(help="Encryption keys of a store: list them, rotate the passphrase.")
app.add_typer(key_app, name="key")


@key_app.command("list")
def list_keys_cmd(
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Show the store's data keys (ids, dates, KDF); nothing secret is printed."""
    from dataclasses import asdict

    from db_backup.blocks.resolve import resolve_storage
    from db_backup.crypto.keys import list_keys

    try:
        infos = list_keys(resolve_storage(storage_location(storage)))
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    if not infos:
        typer.echo("no keys")
    for info in infos:
        typer.echo(
            f"{info.key_id}  created {info.created_at}  wrapped {info.wrapped_at}  {info.kdf}"
        )


@key_app.command("rotate")
def rotate_cmd(
    storage: StorageOpt = None,
    passphrase_secret: PassphraseSecretOpt = None,
    new_passphrase_secret: Annotated[
        str | None,
        typer.Option(
            "--new-passphrase-secret",
            help=f"Secret block with the new passphrase (default: ${NEW_PASSPHRASE_ENV}, "
            "else a prompt).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Re-wrap the store's data keys under a new passphrase; backups are not rewritten.

    The current passphrase comes from --passphrase-secret or $DB_BACKUP_PASSPHRASE.
    """
    from db_backup.blocks.passphrase import load_passphrase
    from db_backup.blocks.resolve import resolve_storage
    from db_backup.crypto.keys import rotate_keys

    try:
        old = load_passphrase(passphrase_secret, "key rotate (current passphrase)")
        new = _new_passphrase(new_passphrase_secret)
        store = resolve_storage(storage_location(storage))
        ids = rotate_keys(store, old, new)
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    for key_id in ids:
        typer.echo(f"rotated {key_id}")
    typer.echo(
        "The old passphrase no longer opens these keys. Update DB_BACKUP_PASSPHRASE / the Secret "
        "block everywhere backups run, and replace any copy of _keys/ you keep elsewhere."
    )


def _new_passphrase(secret: str | None) -> str:
    from db_backup.blocks.passphrase import load_passphrase

    if secret:
        return load_passphrase(secret)
    value = os.environ.get(NEW_PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(
            f"key rotate needs the new passphrase: set {NEW_PASSPHRASE_ENV} or "
            "--new-passphrase-secret (no terminal to prompt on)"
        )
    return str(typer.prompt("New passphrase", hide_input=True, confirmation_prompt=True))
