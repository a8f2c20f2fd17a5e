"""Scratch targets: temporary databases that restore drills may write and drop.

A drill must never touch a real database, so it restores only into a database
it has just created. Each connector that supports drills adds one method::

    def scratch_target(self, label: str) -> Connector:
        '''Create a new, empty database on the same server as this connector's,
        with a name that says it is a drill (e.g. ``dbbackup_drill_<label>_<random>``),
        and return a connector to it. Its ``drop()`` removes that database only.
        Raise TargetError naming the server and the cause when it cannot be
        created (no CREATE DATABASE privilege, disk full, ...); never write to or
        drop this connector's own database.'''

The connector it is called on only names the server (host, port, credentials
from the environment or a block); its own database is never opened for
writing. For SQLite, the "server" is a directory: the scratch database is a
new file created with ``O_EXCL`` in it (never an existing file).

Engines and what their ``scratch_target`` should do:

* PostgreSQL: ``CREATE DATABASE`` on the server (``DROP DATABASE ... WITH (FORCE)``
  in ``drop``); needs CREATEDB.
* MariaDB/MySQL: ``CREATE DATABASE`` (``DROP DATABASE`` in ``drop``).
* MongoDB: a fresh database name on the same deployment (``dropDatabase`` in ``drop``).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from db_backup.connectors.base import Connector
from db_backup.errors import ConfigError

_LABEL_RE = re.compile(r"[^a-z0-9]+")


@runtime_checkable
class ScratchCapable(Protocol):
    """A connector that can create throw-away databases next to its own."""

    engine: str

    def scratch_target(self, label: str) -> Connector:
        """A new, empty database on the same server; TargetError when impossible."""
        ...


def scratch_label(name: str, backup_id: str) -> str:
    """A short label safe in any engine's database names (lower-case, digits, '_')."""
    return _LABEL_RE.sub("_", f"{name}_{backup_id}".lower()).strip("_")[:40]


def default_scratch_base(engine: str) -> Connector:
    """Where a drill creates its scratch database when none is given.

    SQLite: the system temporary directory. Server engines need the user to
    name a server (``--scratch``), since a drill must not guess where it may
    create databases.
    """
    if engine == "sqlite":
        from db_backup.connectors.sqlite.logical import SqliteConnector

        return SqliteConnector(Path(tempfile.gettempdir()))
    raise ConfigError(
        f"a drill of a {engine} backup needs --scratch (a database URL or block) naming the "
        "server on which a temporary database may be created"
    )


def open_scratch(base: Connector, engine: str, label: str) -> Connector:
    """Create the scratch database for a drill of an ``engine`` backup on ``base``'s server."""
    if base.engine != engine:
        raise ConfigError(
            f"scratch {base.describe()} is a {base.engine} server but the backup is {engine}"
        )
    if not isinstance(base, ScratchCapable):
        raise ConfigError(
            f"the {engine} connector cannot create scratch databases yet (no scratch_target)"
        )
    return base.scratch_target(label)
