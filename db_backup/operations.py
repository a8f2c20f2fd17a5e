"""The steps of backup, restore and verify as plain functions.

Prefect tasks in ``db_backup.tasks`` wrap these one to one; keeping them free
of Prefect lets the tests exercise every failure path without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from db_backup.connectors.base import Connector, DumpResult
from db_backup.errors import IntegrityError, ObjectNotFound, SourceError
from db_backup.manifest import Manifest, StoredObject, backup_prefix, manifest_key
from db_backup.pipeline import DumpSink, StagedObject, check_digest, sha256_file, sha256_stream
from db_backup.storage.base import Storage

if TYPE_CHECKING:
    from db_backup.crypto.stream import DataKey


@dataclass
class DumpOutcome:
    """A finished dump: what the connector reported and the staged parts."""

    result: DumpResult
    objects: list[StagedObject]
    started_at: datetime


def stage_dump(
    connector: Connector,
    sink: DumpSink,
    *,
    allow_empty: bool = False,
    allow_damaged: bool = False,
) -> DumpOutcome:
    """Run the connector's dump into ``sink``; no partial file survives a failure.

    A dump with no tables fails (SourceError naming the database) unless
    ``allow_empty``: an empty database is far more often the wrong database
    than the one meant. ``allow_damaged`` lets a source that fails the
    engine's own check be backed up as it is (the manifest records it).
    """
    started = datetime.now(UTC)
    sink.allow_damaged = sink.allow_damaged or allow_damaged
    result = connector.dump(sink)
    if not sink.objects:
        raise SourceError(f"dump of {connector.describe()} produced no data")
    if not result.tables and not allow_empty:
        raise SourceError(
            f"database {connector.describe()} has no tables; pass allow_empty (--allow-empty) "
            "to back up an empty database"
        )
    return DumpOutcome(result, list(sink.objects), started)


def verify_staged(obj: StagedObject) -> StagedObject:
    """Re-read a staged file and confirm the size and sha256 computed while writing."""
    size, digest = sha256_file(obj.path)
    check_digest(f"staged file {obj.path}", size, digest, obj.size, obj.sha256)
    return obj


def check_shrink(
    previous: Manifest | None, outcome: DumpOutcome, min_ratio: float, allow: bool
) -> None:
    """Fail when the new dump is empty or much smaller than the previous backup's.

    A dump that silently lost its tables (wrong database, client/server
    mismatch, permissions) is the backup that fails you at restore time.
    """
    if allow or previous is None or previous.logical_bytes == 0:
        return
    raw = sum(o.raw_size for o in outcome.objects)
    if previous.tables and not outcome.result.tables:
        raise SourceError(
            f"dump has no tables but backup {previous.name}/{previous.backup_id} had "
            f"{len(previous.tables)}; pass allow_shrink (--allow-shrink) if this is expected"
        )
    if raw < previous.logical_bytes * min_ratio:
        raise SourceError(
            f"dump is {raw} bytes, under {min_ratio:.0%} of the {previous.logical_bytes} bytes of "
            f"backup {previous.name}/{previous.backup_id}; pass allow_shrink (--allow-shrink) "
            "if this is expected"
        )


def object_key(name: str, backup_id: str, filename: str) -> str:
    """Where one staged part goes in the store."""
    return f"{backup_prefix(name, backup_id)}{filename}"


def upload_staged(storage: Storage, obj: StagedObject, key: str) -> StoredObject:
    """Upload one staged part and check the stored size; return its manifest record."""
    receipt = storage.put_file(key, obj.path)
    if receipt is not None:
        # The bytes the adapter read and sent must be the bytes hashed while compressing.
        check_digest(f"upload of {key}", receipt.size, receipt.sha256, obj.size, obj.sha256)
    stored_size = next((i.size for i in storage.list(key) if i.key == key), None)
    if stored_size != obj.size:
        raise IntegrityError(
            f"object {key} in {storage.describe()} is {stored_size} bytes after upload, "
            f"expected {obj.size}"
        )
    return StoredObject(
        key=key,
        part=obj.part,
        format=obj.format,
        encoding=obj.encoding,
        size=obj.size,
        sha256=obj.sha256,
        raw_size=obj.raw_size,
        raw_sha256=obj.raw_sha256,
        store_check=receipt.verified if receipt is not None else None,
    )


def build_manifest(
    *,
    name: str,
    backup_id: str,
    connector: Connector,
    outcome: DumpOutcome,
    stored: list[StoredObject],
    compression: dict[str, object],
    flow_run_id: str | None,
    encryption: dict[str, object] | None = None,
) -> Manifest:
    """The manifest of a finished backup (not yet written)."""
    res = outcome.result
    return Manifest(
        backup_id=backup_id,
        name=name,
        engine=connector.engine,
        source=connector.describe(),
        server_version=res.server_version,
        tool=res.tool,
        tool_version=res.tool_version,
        started_at=outcome.started_at,
        finished_at=datetime.now(UTC),
        compression=compression,
        encryption=encryption,
        objects=stored,
        tables=res.tables,
        consistency=res.consistency,
        flow_run_id=flow_run_id,
        logical_bytes=sum(o.raw_size for o in stored),
        stored_bytes=sum(o.size for o in stored),
        uploaded_bytes=sum(o.size for o in stored),
        extra=res.extra,
    )


def commit_manifest(storage: Storage, manifest: Manifest) -> str:
    """Write the manifest last: from this moment the backup exists."""
    for obj in manifest.objects:
        if not storage.exists(obj.key):
            raise IntegrityError(f"object {obj.key} vanished before the manifest was written")
    key = manifest_key(manifest.name, manifest.backup_id)
    storage.put_bytes(key, manifest.to_json())
    return key


def verify_stored(storage: Storage, obj: StoredObject, key: DataKey | None = None) -> None:
    """Re-read a stored object in the store and check size and sha256.

    For a chunked object: the index, then every chunk's digest, then the whole
    dump's; an encrypted chunked object needs ``key`` (EncryptionError without it).
    """
    if obj.chunked:
        from db_backup.chunks.reader import verify_chunked

        verify_chunked(storage, obj, key)
        return
    try:
        with storage.open_read(obj.key) as stream:
            size, digest = sha256_stream(stream)
    except ObjectNotFound as exc:
        raise IntegrityError(
            f"object {obj.key} listed in the manifest is missing from {storage.describe()}"
        ) from exc
    check_digest(f"object {obj.key}", size, digest, obj.size, obj.sha256)
