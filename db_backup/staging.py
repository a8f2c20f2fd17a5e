"""Where a run stages its files, and the backup name a database gets by default."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from db_backup import leftovers
from db_backup.connectors import engine_of
from db_backup.defaults import STAGING_ENV
from db_backup.manifest import check_name
from db_backup.parsing import block_reference

SQLITE_SUFFIXES = (".sqlite3", ".sqlite", ".db")


@contextmanager
def staging_dir(prefix: str) -> Iterator[Path]:
    """A private staging directory, removed whatever happens.

    It lives under ``$DB_BACKUP_STAGING`` when set (put it on a disk with room
    for the compressed dump), else the system temporary directory. Its name
    carries this process's id and the time (``db-backup-<prefix>-<host>-<pid>-
    <stamp>-<random>``, see :mod:`db_backup.leftovers`), so when a run is
    killed the next one recognises the folder and removes it; stale ones are
    swept here first.
    """
    base = Path(os.environ.get(STAGING_ENV) or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    leftovers.sweep_staging(base)
    path = base / leftovers.staging_name(prefix)
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def default_name(database: str) -> str:
    """A backup name from a database reference: file stem, database name or block name."""
    block = block_reference(database, ("-database",))
    if block is not None:
        return check_name(block[1])
    if engine_of(database) == "sqlite":
        stem = Path(database.split("://", 1)[-1]).name
        for ext in SQLITE_SUFFIXES:
            if stem.endswith(ext) and len(stem) > len(ext):
                stem = stem[: -len(ext)]
                break
        return check_name(stem)
    path = urlsplit(database).path.strip("/")
    return check_name(path or engine_of(database))
