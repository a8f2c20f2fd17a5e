"""Issue 12 (trust) on the server engines: empty databases (item 13) and table names
compared as the server compares them (item 2).

Each test failed on the code before its fix; its docstring says what it guards.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_backup import operations as ops
from db_backup.connectors import connector_from_url
from db_backup.errors import ConfigError, SourceError, TargetError
from db_backup.pipeline import DumpSink
from tests import server_helpers as h
from tests.conftest import need_service
from tests.mongo_helpers import free_port, nx_executable, start_nx


def _empty_dump_is_refused(url: str, database: str, staging: Path) -> None:
    """The shared assertion: no tables -> SourceError naming the database; allowed -> {}."""
    connector = connector_from_url(url)
    for sub in ("refused", "allowed"):
        (staging / sub).mkdir()
    with pytest.raises(SourceError, match=rf"database .*{database}.* has no tables") as err:
        ops.stage_dump(connector, DumpSink(staging / "refused", level=1))
    assert err.value.exit_code == 3
    outcome = ops.stage_dump(connector, DumpSink(staging / "allowed", level=1), allow_empty=True)
    assert outcome.result.tables == {} and outcome.objects


def test_empty_postgres_database_fails_unless_allowed(tmp_path: Path) -> None:
    """Guards issue 12 item 13 (PostgreSQL): an empty database backed up as "0 table(s)"."""
    need_service(h.pg_available(), "PostgreSQL on 127.0.0.1:5432")
    name = h.unique("trust_empty")
    h.pg_create(name)
    try:
        _empty_dump_is_refused(f"postgresql://root@127.0.0.1:5432/{name}", name, tmp_path)
    finally:
        h.pg_drop(name)


def test_empty_mariadb_database_fails_unless_allowed(tmp_path: Path) -> None:
    """Guards issue 12 item 13 (MariaDB): an empty database backed up as "0 table(s)"."""
    need_service(h.my_available(), "MariaDB on 127.0.0.1:3306")
    name = h.unique("trust_empty")
    h.my_create(name)
    try:
        _empty_dump_is_refused(f"mysql://root@127.0.0.1:3306/{name}", name, tmp_path)
    finally:
        h.my_drop(name)


def test_empty_mongodb_database_fails_unless_allowed(tmp_path: Path) -> None:
    """Guards issue 12 item 13 (MongoDB, on nx-27017): a database whose last collection
    was dropped backed up as "0 table(s)"."""
    need_service(nx_executable() is not None, "nx-27017 (pip install nx-27017)")
    import pymongo

    proc, url = start_nx(tmp_path)
    try:
        with pymongo.MongoClient(url) as client:
            client["trust_empty"]["gone"].insert_one({"x": 1})
            client["trust_empty"].drop_collection("gone")
        _empty_dump_is_refused(f"{url}/trust_empty", "trust_empty", tmp_path)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- item 2 on MariaDB: lower_case_table_names ----------------------------------------
def test_name_clashes_follow_the_servers_case_rule() -> None:
    """Guards issue 12 item 2 (MariaDB): with lower_case_table_names 1/2, `Base` and
    `base` are one table; with 0 they are two."""
    from db_backup.connectors.mysql.logical import name_clashes

    assert name_clashes(["Base", "other"], ["base"], fold_case=True) == ["Base"]
    assert name_clashes(["Base"], ["base"], fold_case=False) == []


@pytest.fixture(scope="module")
def case_insensitive_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A throwaway MariaDB with lower_case_table_names=1 on a free port (temp datadir)."""
    install, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd")
    need_service(bool(install and server), "mariadb-install-db and mariadbd")
    assert install and server
    work = tmp_path_factory.mktemp("mariadb-lctn")
    done = subprocess.run(
        [install, "--no-defaults", f"--datadir={work / 'data'}", "--user=root"]
        + ["--auth-root-authentication-method=normal", "--skip-test-db"],
        capture_output=True,
    )
    need_service(done.returncode == 0, "mariadb-install-db (a throwaway server)")
    port = free_port()
    log = open(work / "err.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={work / 'data'}", "--user=root", f"--port={port}"]
        + ["--bind-address=127.0.0.1", f"--socket={work / 'sock'}", "--skip-log-bin"]
        + ["--lower-case-table-names=1", "--innodb-buffer-pool-size=16M"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_mariadb(proc, port, work)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _wait_mariadb(proc: subprocess.Popen[bytes], port: int, work: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            h.my_connect(port=port).close()
            return
        except Exception:
            time.sleep(0.2)
    tail = (work / "err.log").read_text(errors="replace")[-2000:]
    pytest.fail(f"throwaway MariaDB on port {port} did not start:\n{tail}")


def test_mariadb_restore_refuses_a_table_differing_only_in_case(
    tmp_path: Path, case_insensitive_mariadb: int
) -> None:
    """Guards issue 12 item 2 (MariaDB): a backup's table `Base` restored with
    `--tables Base` into a lower_case_table_names=1 server silently dropped its `base`."""
    need_service(h.my_available(), "MariaDB on 127.0.0.1:3306")
    port = case_insensitive_mariadb
    src = h.unique("trust_case")
    h.my_create(src)
    try:
        h.my_exec(src, "CREATE TABLE `Base` (v TEXT)", "INSERT INTO `Base` VALUES ('new')")
        manifest = h.backup(
            connector_from_url(f"mysql://root@127.0.0.1:3306/{src}"),
            tmp_path / "store",
            "case",
            tmp_path / "staging",
        )
    finally:
        h.my_drop(src)
    assert set(manifest.tables) == {"Base"}
    h.my_exec(None, "CREATE DATABASE target", "CREATE TABLE target.base (v TEXT)", port=port)
    h.my_exec("target", "INSERT INTO base VALUES ('keep me')", port=port)
    target = connector_from_url(f"mysql://root@127.0.0.1:{port}/target")
    with pytest.raises(TargetError, match=r"already has table\(s\) Base; use --force"):
        h.restore(target, tmp_path / "store", manifest, tmp_path / "restore", tables=["Base"])
    assert h.my_exec("target", "SELECT v FROM base", port=port) == [("keep me",)]
    h.restore(
        target, tmp_path / "store", manifest, tmp_path / "forced", tables=["Base"], force=True
    )
    assert h.my_exec("target", "SELECT v FROM base", port=port) == [("new",)]


def test_postgres_table_names_are_read_as_identifiers() -> None:
    """Guards issue 12 item 2 (PostgreSQL): an unquoted `--tables Orders` means `orders`
    (PostgreSQL folds unquoted names), a quoted `"Orders"` means exactly `Orders`; the
    clash check then compares the exact names pg_restore drops."""
    from datetime import UTC, datetime

    from db_backup.connectors.postgres.toc import resolve_tables
    from db_backup.manifest import Manifest

    now = datetime.now(UTC)
    manifest = Manifest(
        backup_id="20260101T000000Z",
        name="pg",
        engine="postgres",
        source="postgresql://root@127.0.0.1:5432/x",
        started_at=now,
        finished_at=now,
        tables={"public.orders": 1, "public.Orders": 2, "sales.Base": 3},
    )
    assert resolve_tables(["ORDERS"], manifest) == ["public.orders"]
    assert resolve_tables(['"Orders"'], manifest) == ["public.Orders"]
    assert resolve_tables(["Orders"], manifest) == ["public.Orders"]  # an exact name wins
    assert resolve_tables(['"Base"', "sales.Base"], manifest) == ["sales.Base", "sales.Base"]
    with pytest.raises(ConfigError, match="table 'base' is not in backup"):
        resolve_tables(["base"], manifest)
