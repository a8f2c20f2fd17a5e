"""Other server versions in Docker containers (testcontainers).

Where no Docker daemon exists these tests step aside quietly: constructing a
container raises DockerException within milliseconds. They check what the
local servers cannot: the pg_dump version guard against a newer server, and
round trips against older / other servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backup.connectors import connector_from_url
from db_backup.errors import SourceError
from tests import server_helpers as h


def _container(factory: Any) -> Iterator[Any]:
    try:
        from docker.errors import DockerException
    except ImportError:
        pytest.skip("docker SDK not installed")
    try:
        container = factory()
        container.start()
    except DockerException:
        pytest.skip("no Docker daemon: other server versions are not tested here")
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="module")
def postgres_16() -> Iterator[Any]:
    from testcontainers.postgres import PostgresContainer

    yield from _container(lambda: PostgresContainer("postgres:16-alpine"))


@pytest.fixture(scope="module")
def mysql_8() -> Iterator[Any]:
    from testcontainers.mysql import MySqlContainer

    yield from _container(lambda: MySqlContainer("mysql:8.0"))


def test_pg_dump_older_than_server_is_refused_before_dumping(
    postgres_16: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout
    if " 15." not in version:
        pytest.skip(f"this check needs pg_dump 15, found {version.strip()}")
    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", postgres_16.password)
    url = (
        f"postgresql://{postgres_16.username}@127.0.0.1:"
        f"{postgres_16.get_exposed_port(5432)}/{postgres_16.dbname}"
    )
    with pytest.raises(SourceError, match="older than PostgreSQL server 16"):
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
