"""Turn flow parameters (block references, URLs, paths) into plain adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from db_backup.connectors import connector_from_url
from db_backup.connectors.base import Connector
from db_backup.errors import ConfigError
from db_backup.parsing import STORAGE_HINT, block_reference, refuse_url_secrets
from db_backup.storage import Storage, open_storage

# Block type slug -> importer of the block class (imported lazily: optional extras).
DATABASE_BLOCKS: dict[str, Callable[[], type]] = {}
STORAGE_BLOCKS: dict[str, Callable[[], type]] = {}
# Block class name -> function turning a loaded storage block into a Storage.
STORAGE_ADAPTERS: dict[str, Callable[[Any], Storage]] = {}


def _sqlite_block() -> type:
    from db_backup.blocks.databases import SqliteDatabase

    return SqliteDatabase


def _mongodb_block() -> type:
    from db_backup.blocks.databases import MongoDatabase

    return MongoDatabase


def _postgres_block() -> type:
    from db_backup.blocks.databases import PostgresDatabase

    return PostgresDatabase


def _mysql_block() -> type:
    from db_backup.blocks.databases import MySQLDatabase

    return MySQLDatabase


def _local_fs_block() -> type:
    from prefect.filesystems import LocalFileSystem

    return LocalFileSystem


def _local_adapter(block: Any) -> Storage:
    from db_backup.storage.local import LocalStorage

    if not block.basepath:
        raise ConfigError("LocalFileSystem block has no basepath")
    return LocalStorage(block.basepath)


DATABASE_BLOCKS["sqlite-database"] = _sqlite_block
DATABASE_BLOCKS["mongodb-database"] = _mongodb_block
DATABASE_BLOCKS["postgres-database"] = _postgres_block
DATABASE_BLOCKS["mysql-database"] = _mysql_block
STORAGE_BLOCKS["local-file-system"] = _local_fs_block
STORAGE_ADAPTERS["LocalFileSystem"] = _local_adapter


def _register_cloud_blocks() -> None:
    """S3Bucket, GcsBucket and AzureBlobStorageContainer (imported only when used)."""
    from db_backup.blocks import storage as cloud

    STORAGE_BLOCKS["s3-bucket"] = cloud.s3_bucket_block
    STORAGE_BLOCKS["gcs-bucket"] = cloud.gcs_bucket_block
    STORAGE_BLOCKS["azure-blob-storage-container"] = cloud.azure_container_block
    STORAGE_ADAPTERS["S3Bucket"] = cloud.s3_adapter
    STORAGE_ADAPTERS["GcsBucket"] = cloud.gcs_adapter
    STORAGE_ADAPTERS["AzureBlobStorageContainer"] = cloud.azure_adapter


_register_cloud_blocks()


def _block_ref(ref: str, registry: dict[str, Callable[[], type]]) -> tuple[str, str] | None:
    return block_reference(ref, tuple(registry))


def load_block(ref: str, registry: dict[str, Callable[[], type]]) -> Any:
    """Load a block ``slug/name``; ConfigError naming it when it does not exist."""
    slug, name = ref.split("/", 1)
    cls = registry[slug]()
    try:
        return cls.load(name)  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ConfigError(f"block {ref!r} needs a package that is not installed: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"block {ref!r} does not exist (create it, or check the name)") from exc


def resolve_database(ref: str, **overrides: Any) -> Connector:
    """A connector for a block reference, URL or SQLite path."""
    block_ref = _block_ref(ref, DATABASE_BLOCKS)
    if block_ref is None:
        refuse_url_secrets(ref)
        return connector_from_url(ref)
    block = load_block(ref, DATABASE_BLOCKS)
    return block.connector(**overrides)  # type: ignore[no-any-return]


def resolve_storage(ref: str) -> Storage:
    """A storage adapter for a block reference, URL or local path."""
    block_ref = _block_ref(ref, STORAGE_BLOCKS)
    if block_ref is None:
        refuse_url_secrets(ref, "storage URL", STORAGE_HINT)
        return open_storage(ref)
    block = load_block(ref, STORAGE_BLOCKS)
    adapter = STORAGE_ADAPTERS.get(type(block).__name__)
    if adapter is None:
        raise ConfigError(f"storage block {ref!r} of type {type(block).__name__} is not supported")
    return adapter(block)
