"""Database blocks: settings and secrets of one database, named as nouns."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field

from db_backup.connectors.sqlite import SqliteConnector


class SqliteDatabase(Block):
    """A SQLite database file on the machine that runs the flow."""

    _block_type_name = "SQLite Database"
    _block_type_slug = "sqlite-database"
    _description = "A SQLite database file backed up through SQLite's online backup API."

    path: str = Field(description="Path of the database file on the worker.")
    busy_timeout: float = Field(
        default=60.0, description="Seconds to wait for a writer's lock before giving up."
    )

    def connector(self, **overrides: Any) -> SqliteConnector:
        """The connector for this database (``path`` may be overridden for restores)."""
        return SqliteConnector(overrides.get("path", self.path), busy_timeout=self.busy_timeout)
