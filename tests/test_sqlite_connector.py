"""SQLite backups: consistent snapshots, exact restores, selective restores, refusals."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.errors import ConfigError, SourceError, TargetError
from db_backup.storage import LocalStorage
from tests import plain_backup
from tests.sqlite_helpers import dump_rows, make_shop, schema


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_round_trip_restores_identical_data_and_schema(tmp_path: Path, wal: bool) -> None:
    src = make_shop(tmp_path / "shop.db", wal=wal)
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    assert manifest.tables == {"customers": 100, "events": 500, "orders": 500}
    assert manifest.engine == "sqlite" and manifest.server_version == sqlite3.sqlite_version
    target = tmp_path / "out" / "restored.db"
    plain_backup.restore(store, manifest, SqliteConnector(target))
    assert dump_rows(target) == dump_rows(src)
    assert schema(target) == schema(src)
    assert SqliteConnector(target).check() == []


def test_missing_and_non_sqlite_sources_are_refused(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    with pytest.raises(SourceError, match=r"nope.db does not exist"):
        plain_backup.backup(SqliteConnector(tmp_path / "nope.db"), store, "x")
    junk = tmp_path / "junk.db"
    junk.write_text("hello, I am a text file and not a database" * 10)
    with pytest.raises(SourceError, match=r"junk.db is not a SQLite database"):
        plain_backup.backup(SqliteConnector(junk), store, "x")
    assert list(store.list()) == []


def test_target_with_data_is_untouched_without_force(tmp_path: Path) -> None:
    src = make_shop(tmp_path / "shop.db")
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    target = tmp_path / "busy.db"
    with sqlite3.connect(target) as conn:
        conn.execute("CREATE TABLE precious (x)")
        conn.execute("INSERT INTO precious VALUES ('keep me')")
    before = target.read_bytes()
    with pytest.raises(TargetError, match=r"busy.db already holds 1 table\(s\); use --force"):
        plain_backup.restore(store, manifest, SqliteConnector(target))
    assert target.read_bytes() == before
    # --force replaces it, and a stale WAL beside it is not replayed into the new file
    Path(f"{target}-wal").write_bytes(b"stale wal")
    plain_backup.restore(store, manifest, SqliteConnector(target), force=True)
    assert dump_rows(target) == dump_rows(src)
    assert not Path(f"{target}-wal").exists() or Path(f"{target}-wal").read_bytes() != b"stale wal"


def test_selective_restore_brings_indexes_and_triggers(tmp_path: Path) -> None:
    src = make_shop(tmp_path / "shop.db")
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    target = tmp_path / "existing.db"
    with sqlite3.connect(target) as conn:
        conn.execute("CREATE TABLE other (x)")
        conn.execute("INSERT INTO other VALUES (42)")
    plain_backup.restore(store, manifest, SqliteConnector(target), tables=["orders", "events"])
    rows, src_rows = dump_rows(target), dump_rows(src)
    assert rows["orders"] == src_rows["orders"] and rows["events"] == src_rows["events"]
    assert rows["other"] == [(42,)] and "customers" not in rows
    names = {(t, n) for t, n, _ in schema(target)}
    assert ("index", "orders_customer") in names and ("trigger", "orders_event") in names
    with sqlite3.connect(target) as conn:  # the trigger works in the restored copy
        conn.execute("INSERT INTO orders(id, customer_id) VALUES (100000, 1)")
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 501


def test_selective_restore_refuses_unknown_tables_and_conflicts(tmp_path: Path) -> None:
    src = make_shop(tmp_path / "shop.db")
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    target = tmp_path / "t.db"
    with pytest.raises(ConfigError, match=r"table\(s\) nope not in backup shop/"):
        plain_backup.restore(store, manifest, SqliteConnector(target), tables=["orders", "nope"])
    assert not target.exists()
    plain_backup.restore(store, manifest, SqliteConnector(target), tables=["customers"])
    with sqlite3.connect(target) as conn:
        conn.execute("DELETE FROM customers WHERE id > 10")
    before = target.read_bytes()
    with pytest.raises(TargetError, match=r"already has table\(s\) customers"):
        plain_backup.restore(store, manifest, SqliteConnector(target), tables=["customers"])
    assert target.read_bytes() == before
    plain_backup.restore(store, manifest, SqliteConnector(target), tables=["customers"], force=True)
    assert dump_rows(target)["customers"] == dump_rows(src)["customers"]
    assert dump_rows(target)["sqlite_sequence"] == [("customers", 100)]


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
if sys.argv[2] == "wal":
    conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS ticks (id INTEGER PRIMARY KEY, payload TEXT)")
print("ready", flush=True)
i = 0
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO ticks(payload) VALUES (?)", [("x" * 200,)] * 50)
    conn.execute("COMMIT")
    i += 1
    time.sleep(0.001)
"""


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_snapshot_under_a_concurrent_writer_is_consistent(tmp_path: Path, mode: str) -> None:
    src = tmp_path / "busy.db"
    with sqlite3.connect(src) as conn:
        conn.execute("CREATE TABLE ticks (id INTEGER PRIMARY KEY, payload TEXT)")
        conn.executemany("INSERT INTO ticks(payload) VALUES (?)", [("y" * 200,)] * 20000)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(src), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        store = LocalStorage(tmp_path / "store")
        manifest = plain_backup.backup(SqliteConnector(src), store, "busy")
        time.sleep(0.2)
    finally:
        writer.kill()
        writer.wait()
    target = tmp_path / "restored.db"
    plain_backup.restore(store, manifest, SqliteConnector(target))
    assert SqliteConnector(target).check() == []
    with sqlite3.connect(target) as conn:
        count, top = conn.execute("SELECT count(*), max(id) FROM ticks").fetchone()
    # exactly the rows of one snapshot: every committed batch, no gaps, no torn batch
    assert count == manifest.tables["ticks"] == top
    assert (count - 20000) % 50 == 0
    with sqlite3.connect(src) as conn:
        assert conn.execute("SELECT count(*) FROM ticks").fetchone()[0] > count
