"""Tasks of the backup flow: dump (streamed through zstd) -> checksum -> upload -> manifest."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prefect import get_run_logger

from db_backup import operations as ops
from db_backup.blocks.resolve import resolve_database, resolve_storage
from db_backup.catalog import allocate_backup_id, list_backups, release_backup_id
from db_backup.crypto.keys import KeySource, require_encrypted
from db_backup.manifest import Manifest, StoredObject
from db_backup.pipeline import DumpSink, StagedObject
from db_backup.progress import current_progress
from db_backup.tasks.encryption import encode_layers
from db_backup.tasks.policy import LOOKUP, ONCE, io_task
from db_backup.units import human_bytes


@io_task("dump")
def dump_database(
    database: str,
    staging: str,
    level: int,
    threads: int | None,
    key: KeySource | None = None,
    allow_empty: bool = False,
    allow_damaged: bool = False,
) -> ops.DumpOutcome:
    """Dump ``database`` into staging, streamed through sha256 and zstd (one pass).

    Fails on a database with no tables unless ``allow_empty``, and on one that
    fails the engine's own check unless ``allow_damaged`` (see ``ops.stage_dump``).

    The dump is compressed as it is produced, so staging never holds the raw
    dump and memory does not grow with its size. With ``key``, every part is
    also encrypted after compression (the staged file is ciphertext).
    """
    logger = get_run_logger()
    connector = resolve_database(database)
    threads = 0 if threads is None else threads  # 0: zstd's single-threaded default
    with encode_layers(key) as layers:
        sink = DumpSink(
            Path(staging), level=level, threads=threads, layers=layers, progress=current_progress()
        )
        outcome = ops.stage_dump(
            connector, sink, allow_empty=allow_empty, allow_damaged=allow_damaged
        )
    if key:
        require_encrypted(outcome.objects)
    raw = sum(o.raw_size for o in outcome.objects)
    stored = sum(o.size for o in outcome.objects)
    logger.info(
        "Dumped %s: %d table(s), %s raw, %s with zstd-%d",
        connector.describe(),
        len(outcome.result.tables),
        human_bytes(raw),
        human_bytes(stored),
        level,
    )
    return outcome


@io_task("checksum", ONCE)
def checksum_file(obj: StagedObject) -> StagedObject:
    """Re-read a staged part and confirm its sha256 before it leaves the machine."""
    ops.verify_staged(obj)
    get_run_logger().info("sha256 %s  %s", obj.sha256, obj.filename)
    return obj


@io_task("upload")
def upload_file(storage: str, obj: StagedObject, key: str) -> StoredObject:
    """Upload one staged part to the store (safe to run twice: same key, whole object)."""
    store = resolve_storage(storage)
    stored = ops.upload_staged(store, obj, key)
    get_run_logger().info(
        "Uploaded %s (%s) to %s/%s", obj.filename, human_bytes(obj.size), store.describe(), key
    )
    return stored


@io_task("previous-backup", LOOKUP)
def previous_backup(storage: str, name: str) -> Manifest | None:
    """The newest complete backup of ``name``, used to catch suspiciously small dumps."""
    backups = list_backups(resolve_storage(storage), name)
    return backups[-1] if backups else None


@io_task("allocate-id", LOOKUP)
def allocate_id(storage: str, name: str) -> str:
    """A fresh, sortable backup id not yet used under ``name``."""
    return allocate_backup_id(resolve_storage(storage), name)


@contextlib.contextmanager
def released_on_failure(storage: str, name: str, backup_id: str) -> Iterator[None]:
    """On any failure inside, give the reserved id back if nothing was stored under it.

    Best effort: a store that cannot be reached keeps the reservation, which
    prune removes later with other unfinished backups.
    """
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            release_backup_id(resolve_storage(storage), name, backup_id)
        raise


@io_task("write-manifest")
def write_manifest(storage: str, manifest: Manifest) -> str:
    """Write the manifest last; from then on the backup exists."""
    store = resolve_storage(storage)
    key = ops.commit_manifest(store, manifest)
    get_run_logger().info("Backup %s/%s committed (%s)", manifest.name, manifest.backup_id, key)
    return key
