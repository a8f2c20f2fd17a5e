"""Tasks and helpers that bring the passphrase and the data key to the pipeline.

The passphrase comes from a Prefect ``Secret`` block (``passphrase_secret``)
or ``$DB_BACKUP_PASSPHRASE`` (:mod:`db_backup.blocks.passphrase`); it is read
inside the task that needs it and never passed as a parameter, returned, logged
or put in a message. Tasks pass
:class:`~db_backup.crypto.keys.KeySource` (store, key id, secret name) instead.
"""

from __future__ import annotations

import contextlib

from prefect import get_run_logger

from db_backup.blocks.passphrase import load_passphrase
from db_backup.blocks.resolve import resolve_storage
from db_backup.catalog import list_backups
from db_backup.crypto import keys
from db_backup.crypto.stream import ALGORITHM, DataKey
from db_backup.errors import PassphraseRequired
from db_backup.manifest import Manifest
from db_backup.pipeline import EncodeLayer
from db_backup.tasks.policy import LOOKUP, io_task


def load_data_key(source: keys.KeySource) -> DataKey:
    """Unlock the data key ``source`` names (scrypt: ~0.5 s)."""
    passphrase = load_passphrase(source.passphrase_secret)
    return keys.unlock_key(resolve_storage(source.storage), source.key_id, passphrase)


def encode_layers(
    source: keys.KeySource | None,
) -> contextlib.AbstractContextManager[list[tuple[str, EncodeLayer]]]:
    """The DumpSink layers for ``source`` (none when it is None); the key is unlocked in
    the background while the connector starts (see
    :func:`db_backup.crypto.keys.unlocking_layers`)."""
    if source is None:
        return contextlib.nullcontext([])
    passphrase = load_passphrase(source.passphrase_secret)
    return keys.unlocking_layers(resolve_storage(source.storage), source.key_id, passphrase)


@io_task("prepare-encryption", LOOKUP)
def prepare_encryption(storage: str, passphrase_secret: str | None) -> keys.KeySource:
    """The key new backups use (created on first use); fails at once without a passphrase.

    The dump task unlocks the key while the connector starts, so a wrong
    passphrase fails the run before anything is stored.
    """
    passphrase = load_passphrase(passphrase_secret, "backup with encryption")
    store = resolve_storage(storage)
    key_id = keys.key_for_new_backups(
        store, passphrase, lambda: any(m.encryption for m in list_backups(store))
    )
    get_run_logger().info(
        "Encrypting with %s, key %s (%s)", ALGORITHM, key_id, keys.key_file_key(key_id)
    )
    return keys.KeySource(storage, key_id, passphrase_secret)


@io_task("unlock-key", LOOKUP)
def unlock_backup_key(
    storage: str, manifest: Manifest, passphrase_secret: str | None
) -> keys.KeySource | None:
    """For an encrypted backup, prove the passphrase unlocks its key (before any restore step)."""
    key_id = keys.backup_key_id(manifest)
    if key_id is None:
        return None
    source = keys.KeySource(storage, key_id, passphrase_secret)
    try:
        load_passphrase(passphrase_secret, f"backup {manifest.name}/{manifest.backup_id}")
    except PassphraseRequired as exc:
        raise PassphraseRequired(f"{exc} (the backup is encrypted with key {key_id})") from None
    load_data_key(source)
    get_run_logger().info("Unlocked key %s of %s/%s", key_id, manifest.name, manifest.backup_id)
    return source
