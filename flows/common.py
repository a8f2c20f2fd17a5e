"""Helpers shared by the flows."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.runtime import flow_run

from db_backup.connectors import engine_of
from db_backup.manifest import check_name

STAGING_ENV = "DB_BACKUP_STAGING"
DEFAULT_STORAGE = "./backups"
STORAGE_ENV = "DB_BACKUP_STORAGE"


@contextmanager
def staging_dir(prefix: str) -> Iterator[Path]:
    """A private staging directory, removed whatever happens.

    It lives under ``$DB_BACKUP_STAGING`` when set (put it on a disk with room
    for the compressed dump), else the system temporary directory.
    """
    base = os.environ.get(STAGING_ENV) or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"db-backup-{prefix}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def default_name(database: str) -> str:
    """A backup name from a database reference: file stem, database name or block name."""
    if (
        "://" not in database
        and "/" in database
        and database.split("/", 1)[0].endswith(("-database",))
    ):
        return check_name(database.split("/", 1)[1])
    if engine_of(database) == "sqlite":
        stem = Path(database.split("://", 1)[-1]).name
        for ext in (".sqlite3", ".sqlite", ".db"):
            if stem.endswith(ext) and len(stem) > len(ext):
                stem = stem[: -len(ext)]
                break
        return check_name(stem)
    from urllib.parse import urlsplit

    path = urlsplit(database).path.strip("/")
    return check_name(path or engine_of(database))


def current_flow_run_id() -> str | None:
    """The id of the running flow run, or None outside one."""
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None
