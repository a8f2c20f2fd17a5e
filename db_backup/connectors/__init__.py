"""Connectors by engine, created from a URL or a path.

``sqlite:///abs/path.db`` or a plain path is SQLite; ``postgresql://``,
``mysql://`` / ``mariadb://`` and ``mongodb://`` name server databases. The
engine modules are imported lazily, so a missing optional driver only matters
for the engine that needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from db_backup.connectors.base import Connector
from db_backup.errors import ConfigError

# engine -> (module, factory-from-url function name)
ENGINES: dict[str, tuple[str, str]] = {
    "sqlite": ("db_backup.connectors.sqlite.logical", "SqliteConnector"),
    "mongodb": ("db_backup.connectors.mongodb.logical", "MongoConnector"),
    "postgres": ("db_backup.connectors.postgres.logical", "from_url:from_url"),
    "mysql": ("db_backup.connectors.mysql.logical", "from_url:from_url"),
}
ALIASES = {
    "sqlite3": "sqlite",
    "postgresql": "postgres",
    "pg": "postgres",
    "mariadb": "mysql",
    "mongo": "mongodb",
}
SCHEMES = {
    "sqlite": "sqlite",
    "postgres": "postgres",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mongodb": "mongodb",
    "mongodb+srv": "mongodb",
}


def normalize_engine(engine: str) -> str:
    """Canonical engine name; ConfigError for an unknown one."""
    key = ALIASES.get(engine.lower(), engine.lower())
    if key not in ENGINES:
        raise ConfigError(
            f"database type {engine!r} is not supported (choose from {', '.join(sorted(ENGINES))})"
        )
    return key


def engine_of(url: str) -> str:
    """The engine a URL or path names (a bare path is SQLite)."""
    if "://" not in url:
        return "sqlite"
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"database URL scheme {scheme!r} is not supported in {_safe(url)}")
    return normalize_engine(SCHEMES[scheme])


def connector_from_url(url: str, **options: Any) -> Connector:
    """A connector for ``url``; passwords come from the environment, never the URL."""
    engine = engine_of(url)
    if engine == "sqlite":
        path = url.split("://", 1)[1] if "://" in url else url
        return _factory(engine)(path, **options)  # type: ignore[no-any-return]
    return _factory(engine)(url, **options)  # type: ignore[no-any-return]


def reject_url_password(url: str) -> None:
    """ConfigError when a URL carries a secret (the one check: ``parsing.refuse_url_secrets``)."""
    from db_backup.parsing import refuse_url_secrets

    refuse_url_secrets(url)


def _factory(engine: str) -> Callable[..., Any]:
    module_name, attr = ENGINES[engine]
    if attr.startswith("from_url:"):
        attr = attr.split(":", 1)[1]
    module = importlib.import_module(module_name)
    return getattr(module, attr)  # type: ignore[no-any-return]


def _safe(url: str) -> str:
    """The URL with any password replaced, for messages."""
    from db_backup.parsing import mask_url

    return mask_url(url)
