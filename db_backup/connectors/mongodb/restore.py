"""The server-free half of a MongoDB restore: selection, checks, batches, indexes.

Everything here takes plain values or a pymongo ``Database``/``Collection``
handed in by :class:`db_backup.connectors.mongodb.logical.MongoConnector`, so the
batching and checking logic is testable without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from db_backup.connectors.mongodb.archive import BSON_SUFFIX, ArchiveIndex, CollectionEntry
from db_backup.errors import ConfigError, IntegrityError
from db_backup.manifest import Manifest

INSERT_BATCH_BYTES = 8 * 1024 * 1024
INSERT_BATCH_DOCS = 10_000


def select_collections(manifest: Manifest, wanted: list[str] | None) -> list[str]:
    """The collections (and views) to restore; ConfigError naming any the backup lacks."""
    held = sorted({*manifest.tables, *manifest.extra.get("views", [])})
    if wanted is None:
        return held
    missing = [n for n in wanted if n not in held]
    if missing:
        raise ConfigError(
            f"collection(s) {', '.join(missing)} not in backup {manifest.name}/"
            f"{manifest.backup_id} (it has: {', '.join(held) or 'none'})"
        )
    return list(dict.fromkeys(wanted))


def batched(docs: Iterable[bytes], max_bytes: int, max_docs: int) -> Iterator[list[bytes]]:
    """Group raw documents into batches of at most ``max_bytes`` / ``max_docs``."""
    batch: list[bytes] = []
    size = 0
    for doc in docs:
        if batch and (size + len(doc) > max_bytes or len(batch) >= max_docs):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += len(doc)
    if batch:
        yield batch


def insert_documents(
    collection: Any,
    docs: Iterable[bytes],
    max_bytes: int = INSERT_BATCH_BYTES,
    max_docs: int = INSERT_BATCH_DOCS,
) -> int:
    """Insert raw documents in order, as RawBSONDocument, bypassing validators.

    The backup holds what the collection held; a validator added later must
    not reject documents that predate it.
    """
    from bson.raw_bson import RawBSONDocument

    total = 0
    for batch in batched(docs, max_bytes, max_docs):
        collection.insert_many(
            [RawBSONDocument(d) for d in batch], ordered=True, bypass_document_validation=True
        )
        total += len(batch)
    return total


def create_indexes(db: Any, entry: CollectionEntry) -> None:
    """Recreate the collection's indexes from its metadata.

    ``_id_`` and a clustered index come with the collection itself (the latter
    from its ``clusteredIndex`` option); ``ns`` is refused by newer servers.
    """
    specs = [
        {k: v for k, v in spec.items() if k != "ns"}
        for spec in entry.indexes
        if spec.get("name") != "_id_" and not spec.get("clustered")
    ]
    if specs:
        db.command("createIndexes", entry.name, indexes=specs)


def create_collection(db: Any, entry: CollectionEntry) -> None:
    """Create the collection (or view) with its stored options, unless it exists."""
    if entry.name in db.list_collection_names(filter={"name": entry.name}):
        return
    options = entry.options
    options.pop("uuid", None)
    db.command("create", entry.name, **options)


def archive_entry(index: ArchiveIndex, name: str, what: str) -> CollectionEntry:
    entry = index.collections.get(name)
    if entry is None:
        raise IntegrityError(f"{what} lacks collection {name!r} that its manifest lists")
    return entry


def check_index(index: ArchiveIndex, manifest: Manifest, what: str) -> None:
    """The archive must hold exactly the documents the manifest counted."""
    for name, count in manifest.tables.items():
        entry = index.collections.get(name)
        if entry is None or not entry.has_data:
            raise IntegrityError(f"{what} lacks {manifest.name}'s collection {name!r}")
        if entry.documents != count:
            raise IntegrityError(
                f"{what}: {entry.stem}{BSON_SUFFIX} holds {entry.documents} document(s) "
                f"but the manifest counted {count}"
            )
