"""Finding backups in a store: manifests are the catalogue.

Nothing else is consulted: no side file can drift from the store. A manifest
that cannot be read is reported through ``on_skip`` and left out, never
guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from db_backup.errors import BackupNotFound, ManifestError, StorageError
from db_backup.manifest import (
    MANIFEST_NAME,
    Manifest,
    backup_prefix,
    check_name,
    is_backup_id,
    manifest_key,
    new_backup_id,
    next_backup_id,
    parse_manifest,
)
from db_backup.storage.base import Storage

SkipFn = Callable[[str, Exception], None]
RESERVED_PREFIXES = ("_", ".")
RESERVATION_NAME = "reservation.json"
MAX_RESERVE_ATTEMPTS = 600


def _ignore(key: str, exc: Exception) -> None:
    return None


def manifest_keys(storage: Storage, name: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(name, backup id, key) of every manifest in the store, optionally for one name."""
    prefix = f"{check_name(name)}/" if name else ""
    for info in storage.list(prefix):
        parts = info.key.split("/")
        if len(parts) != 3 or parts[2] != MANIFEST_NAME:
            continue
        if parts[0].startswith(RESERVED_PREFIXES) or not is_backup_id(parts[1]):
            continue
        yield parts[0], parts[1], info.key


def load_manifest(storage: Storage, name: str, backup_id: str) -> Manifest:
    """The manifest of one backup; BackupNotFound when there is none."""
    key = manifest_key(name, backup_id)
    if not storage.exists(key):
        raise BackupNotFound(f"backup {name}/{backup_id} not found in {storage.describe()}")
    return parse_manifest(storage.get_bytes(key), f"{storage.describe()}/{key}")


def list_backups(
    storage: Storage, name: str | None = None, on_skip: SkipFn = _ignore
) -> list[Manifest]:
    """Every complete backup (oldest first); unreadable manifests go to ``on_skip``."""
    found: list[Manifest] = []
    for bname, bid, key in manifest_keys(storage, name):
        try:
            manifest = parse_manifest(storage.get_bytes(key), f"{storage.describe()}/{key}")
        except (ManifestError, StorageError) as exc:
            on_skip(key, exc)
            continue
        if manifest.name != bname or manifest.backup_id != bid:
            on_skip(
                key, ManifestError(f"manifest {key} names {manifest.name}/{manifest.backup_id}")
            )
            continue
        found.append(manifest)
    found.sort(key=lambda m: (m.name, m.backup_id))
    return found


def find_backup(storage: Storage, name: str, ref: str = "latest") -> Manifest:
    """The backup ``ref`` (an id or ``latest``) of ``name``; BackupNotFound otherwise."""
    check_name(name)
    if ref != "latest":
        if not is_backup_id(ref):
            raise BackupNotFound(
                f"backup id {ref!r} is not an id like 20260115T020000Z or 'latest'"
            )
        return load_manifest(storage, name, ref)
    backups = list_backups(storage, name)
    if not backups:
        raise BackupNotFound(f"no backups named {name!r} in {storage.describe()}")
    return backups[-1]


def allocate_backup_id(storage: Storage, name: str) -> str:
    """A fresh id for ``name``, later than every id used under it, reserved in the store.

    The id is claimed by creating ``<name>/<id>/reservation.json`` only if it is
    absent (one atomic step of the store), so two backups of one name started in
    the same second, on one machine or two, never share an id: the loser takes
    the next second. A reservation without a manifest is an unfinished backup:
    never listed, and removed by prune once older than its orphan grace.

    Never an id that a pruned backup once had: backups made faster than one a
    second run ahead of the clock, and prune may empty an id's prefix, so "not
    in use now" alone could hand out a removed backup's id again.
    """
    backup_id = new_backup_id()
    used = [i.key.split("/")[1] for i in storage.list(f"{check_name(name)}/")]
    newest = max((u for u in used if is_backup_id(u)), default="")
    if newest >= backup_id:
        backup_id = next_backup_id(newest)
    for _ in range(MAX_RESERVE_ATTEMPTS):
        if storage.create_exclusive(
            reservation_key(name, backup_id), _reservation(name, backup_id)
        ):
            return backup_id
        backup_id = next_backup_id(backup_id)
    raise StorageError(
        f"could not reserve a backup id for {name!r} in {storage.describe()}: "
        f"{MAX_RESERVE_ATTEMPTS} ids in a row were taken"
    )


def release_backup_id(storage: Storage, name: str, backup_id: str) -> bool:
    """Give back the id of a run that failed before storing anything.

    Deletes the reservation only when it is the sole object under the id's
    prefix, so a failed run whose source could not even be read leaves the
    store as it was. Once anything else was stored, the id stays claimed (the
    leftovers are an unfinished backup that prune removes later). True when
    the reservation was removed.
    """
    keys = [i.key for i in storage.list(backup_prefix(name, backup_id))]
    if keys != [reservation_key(name, backup_id)]:
        return False
    storage.delete(keys[0])
    return True


def reservation_key(name: str, backup_id: str) -> str:
    """The object that claims ``backup_id`` for one backup run."""
    return f"{backup_prefix(name, backup_id)}{RESERVATION_NAME}"


def _reservation(name: str, backup_id: str) -> bytes:
    record = {"name": name, "backup_id": backup_id, "reserved_at": new_backup_id()}
    return (json.dumps(record) + "\n").encode()
