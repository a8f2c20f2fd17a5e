"""Database blocks: settings and secrets of one database, named as nouns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from db_backup.connectors.mysql.logical import MySQLConnector
from db_backup.connectors.postgres.logical import PostgresConnector
from db_backup.connectors.sqlite.logical import SqliteConnector

if TYPE_CHECKING:
    from db_backup.connectors.mongodb.logical import MongoConnector


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
        from db_backup.connectors.mongodb.logical import MongoConnector

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


class PostgresDatabase(Block):
    """A PostgreSQL database backed up with pg_dump (custom format) and restored with pg_restore."""

    _block_type_name = "Postgres Database"
    _block_type_slug = "postgres-database"
    _description = "A PostgreSQL database: connection settings and an optional password."

    host: str = Field(default="127.0.0.1", description="Server host name or socket directory.")
    port: int = Field(default=5432, description="Server port.")
    user: str = Field(default="postgres", description="Role to connect as.")
    database: str = Field(description="Database to back up (or to restore into).")
    password: SecretStr | None = Field(
        default=None,
        description="Password; given to pg_dump in a 0600 passfile, never on a command line.",
    )
    sslmode: str | None = Field(
        default=None, description="libpq sslmode: disable, prefer, require, verify-ca, verify-full."
    )
    sslrootcert: str | None = Field(default=None, description="CA certificate file (PEM).")
    sslcert: str | None = Field(default=None, description="Client certificate file (PEM).")
    sslkey: str | None = Field(default=None, description="Client key file (PEM).")
    include_globals: bool = Field(
        default=False,
        description="Also store roles and tablespaces (pg_dumpall --globals-only).",
    )

    def connector(self, **overrides: Any) -> PostgresConnector:
        """The connector for this database (``database`` may be overridden for restores)."""
        ssl = {
            k: v
            for k, v in {
                "sslmode": self.sslmode,
                "sslrootcert": self.sslrootcert,
                "sslcert": self.sslcert,
                "sslkey": self.sslkey,
            }.items()
            if v
        }
        return PostgresConnector(
            host=self.host,
            port=self.port,
            user=self.user,
            database=overrides.get("database", self.database),
            password=self.password.get_secret_value() if self.password else None,
            ssl=ssl,
            include_globals=self.include_globals,
        )


class MySQLDatabase(Block):
    """A MySQL or MariaDB database backed up with mariadb-dump / mysqldump."""

    _block_type_name = "MySQL Database"
    _block_type_slug = "mysql-database"
    _description = "A MySQL or MariaDB database: connection settings and an optional password."

    host: str = Field(default="127.0.0.1", description="Server host name.")
    port: int = Field(default=3306, description="Server port.")
    user: str = Field(default="root", description="User to connect as.")
    database: str = Field(description="Database (schema) to back up (or to restore into).")
    password: SecretStr | None = Field(
        default=None,
        description="Password; given to the tools in a 0600 option file, never on a command line.",
    )
    ssl_ca: str | None = Field(default=None, description="CA certificate file (PEM).")
    ssl_cert: str | None = Field(default=None, description="Client certificate file (PEM).")
    ssl_key: str | None = Field(default=None, description="Client key file (PEM).")

    def connector(self, **overrides: Any) -> MySQLConnector:
        """The connector for this database (``database`` may be overridden for restores)."""
        ssl = {
            k: v
            for k, v in {
                "ssl-ca": self.ssl_ca,
                "ssl-cert": self.ssl_cert,
                "ssl-key": self.ssl_key,
            }.items()
            if v
        }
        return MySQLConnector(
            host=self.host,
            port=self.port,
            user=self.user,
            database=overrides.get("database", self.database),
            password=self.password.get_secret_value() if self.password else None,
            ssl=ssl,
        )
