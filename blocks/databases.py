"""Database blocks: settings and secrets of one database, named as nouns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from db_backup.connectors.sqlite import SqliteConnector

if TYPE_CHECKING:
    from db_backup.connectors.mongodb import MongoConnector


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


class MongoDatabase(Block):
    """One MongoDB database: a connection URI, or host/port/user and a secret password."""

    _block_type_name = "MongoDB Database"
    _block_type_slug = "mongodb-database"
    _description = (
        "A MongoDB database dumped with pymongo into mongodump's layout (readable by "
        "mongorestore --dir after zstd -d and tar x)."
    )

    uri: SecretStr | None = Field(
        default=None,
        description="Full connection URI (mongodb:// or mongodb+srv://) naming the database; "
        "may hold the password, so it is stored as a secret. Overrides host/port/database.",
    )
    host: str = Field(default="127.0.0.1", description="Server host (ignored when uri is set).")
    port: int = Field(default=27017, description="Server port (ignored when uri is set).")
    database: str | None = Field(
        default=None, description="Database name (required unless uri names it)."
    )
    username: str | None = Field(default=None, description="User to authenticate as.")
    password: SecretStr | None = Field(default=None, description="The user's password.")
    auth_source: str | None = Field(
        default=None, description="Database holding the user (authSource), e.g. 'admin'."
    )
    tls: bool = Field(default=False, description="Connect with TLS.")
    tls_ca_file: str | None = Field(
        default=None, description="CA bundle to verify the server's certificate (tlsCAFile)."
    )
    collections: list[str] | None = Field(
        default=None, description="Dump only these collections (default: all)."
    )

    def connector(self, **overrides: Any) -> MongoConnector:
        """The connector for this database (``database`` may be overridden for restores)."""
        from db_backup.connectors.mongodb import MongoConnector

        url = self._url(overrides.get("database"))
        password = self.password.get_secret_value() if self.password else None
        options: dict[str, Any] = {}
        if self.auth_source:
            options["authSource"] = self.auth_source
        if self.tls:
            options["tls"] = True
        if self.tls_ca_file:
            options["tlsCAFile"] = self.tls_ca_file
        return MongoConnector(
            url, password=password, collections=self.collections, client_options=options
        )

    def _url(self, database: str | None) -> str:
        from urllib.parse import quote, urlsplit, urlunsplit

        if self.uri is not None:
            parts = urlsplit(self.uri.get_secret_value())
            if database:
                parts = parts._replace(path=f"/{quote(database, safe='')}")
            return urlunsplit(parts)
        name = database or self.database
        if not name:
            from db_backup.errors import ConfigError

            raise ConfigError("MongoDatabase block needs a database (or a uri naming one)")
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        return f"mongodb://{user}{self.host}:{self.port}/{quote(name, safe='')}"
