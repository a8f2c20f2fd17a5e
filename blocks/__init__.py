"""Prefect blocks of db-backup and the resolvers that turn flow parameters into
connectors and storage adapters.

Flow parameters are plain strings so they read well in ``prefect.yaml``, in the
UI's run form and in ``prefect deployment run --param``: a database is a block
reference (``sqlite-database/shop``) or a URL/path; a store is a block reference
(``local-file-system/backups``, ``s3-bucket/prod``) or a path/URL.
"""

from db_backup.blocks.databases import (
    MongoDatabase,
    MySQLDatabase,
    PostgresDatabase,
    SqliteDatabase,
)
from db_backup.blocks.resolve import resolve_database, resolve_storage

__all__ = [
    "MongoDatabase",
    "MySQLDatabase",
    "PostgresDatabase",
    "SqliteDatabase",
    "resolve_database",
    "resolve_storage",
]
