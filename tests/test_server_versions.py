"""Other server versions in Docker containers (testcontainers).

They check what the local servers cannot: the pg_dump version guard against a
newer server, and round trips against older / other servers. Marked ``docker``:
scripts/test.sh deselects them, and says so, where no Docker daemon runs; with
a daemon any error is a failure.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backup.connectors import connector_from_url
from db_backup.errors import SourceError
from tests import server_helpers as h

pytestmark = pytest.mark.docker


def _container(factory: Any) -> Iterator[Any]:
    container = factory()
    container.start()
    try:
        yield container
    finally:
        container.stop()


def pg_dump_major() -> int:
    """The major version of the local pg_dump ("pg_dump (PostgreSQL) 15.14" -> 15)."""
    out = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1].split(".")[0])


@pytest.fixture(scope="module")
def newer_postgres(docker_daemon: None) -> Iterator[Any]:
    """A PostgreSQL server one major version newer than the local pg_dump."""
    from testcontainers.postgres import PostgresContainer

    yield from _container(lambda: PostgresContainer(f"postgres:{pg_dump_major() + 1}-alpine"))


@pytest.fixture(scope="module")
def mysql_8(docker_daemon: None) -> Iterator[Any]:
    from testcontainers.mysql import MySqlContainer

    yield from _container(lambda: MySqlContainer("mysql:8.0"))


def test_pg_dump_older_than_server_is_refused_before_dumping(
    newer_postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", newer_postgres.password)
    url = (
        f"postgresql://{newer_postgres.username}@127.0.0.1:"
        f"{newer_postgres.get_exposed_port(5432)}/{newer_postgres.dbname}"
    )
    with pytest.raises(SourceError, match=f"older than PostgreSQL server {pg_dump_major() + 1}"):
        h.backup(connector_from_url(url), tmp_path / "store", "v16", tmp_path / "stage")
    assert h.manifests(tmp_path / "store") == []


def test_mysql_8_round_trip(mysql_8: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_BACKUP_MYSQL_PASSWORD", mysql_8.root_password)
    port = mysql_8.get_exposed_port(3306)
    src = connector_from_url(f"mysql://root@127.0.0.1:{port}/{mysql_8.dbname}")
    conn = src._connect()  # type: ignore[attr-defined]
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v JSON)")
        cur.execute("INSERT INTO t VALUES (1, '{\"a\": 1}'), (2, NULL)")
    conn.close()
    manifest = h.backup(src, tmp_path / "store", "m8", tmp_path / "stage")
    dst = connector_from_url(f"mysql://root@127.0.0.1:{port}/copy_m8")
    h.restore(dst, tmp_path / "store", manifest, tmp_path / "r")
    assert dst.row_counts() == {"t": 2}
