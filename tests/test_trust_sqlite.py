"""Issue 12 (trust), SQLite side: each test reproduces a defect found by a hostile test.

Every test here failed on the code before its fix; its docstring says what it guards.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from db_backup.catalog import list_backups
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.errors import ConfigError, SourceError, StorageError, TargetError
from db_backup.flows.backup import backup_database
from db_backup.flows.restore import restore_database
from db_backup.manifest import check_name
from db_backup.storage import LocalStorage
from tests import plain_backup
from tests.conftest import CliRunner
from tests.sqlite_helpers import dump_rows, make_shop


def _table_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
    conn.close()
    return rows


def _make(path: Path, *statements: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(";\n".join(statements))
    conn.commit()
    conn.close()
    return path


# -- item 2: table names compared the way SQLite compares them ------------------------
def test_selective_restore_refuses_a_table_differing_only_in_case(tmp_path: Path) -> None:
    """Guards issue 12 item 2: `restore --tables base` without --force must not drop `Base`.

    SQLite's DROP TABLE ignores ASCII case, so the clash check must too.
    """
    src = _make(tmp_path / "src.db", "CREATE TABLE base (x)", "INSERT INTO base VALUES ('new')")
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "src")
    target = _make(
        tmp_path / "target.db", "CREATE TABLE Base (y)", "INSERT INTO Base VALUES ('keep me')"
    )
    before = target.read_bytes()
    with pytest.raises(TargetError, match=r"target.db already has table\(s\) base; use --force"):
        plain_backup.restore(store, manifest, SqliteConnector(target), tables=["base"])
    assert target.read_bytes() == before
    assert _table_rows(target, "Base") == [("keep me",)]
    # with --force the user asked for it: the backup's table replaces the target's
    plain_backup.restore(store, manifest, SqliteConnector(target), tables=["base"], force=True)
    assert _table_rows(target, "base") == [("new",)]


# -- item 3: only SQLite's own tables are internal ------------------------------------
def test_tables_that_look_like_sqlite_internals_are_backed_up(tmp_path: Path) -> None:
    """Guards issue 12 item 3: `LIKE 'sqlite_%'` hid `SqliteOrders` and `sqlite1`.

    `_` is a LIKE wildcard and LIKE ignores case; only the exact prefix `sqlite_` is SQLite's.
    """
    src = _make(
        tmp_path / "odd.db",
        "CREATE TABLE SqliteOrders (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)",
        "CREATE TABLE sqlite1 (v)",
        "INSERT INTO SqliteOrders(v) VALUES ('a'), ('b')",
        "INSERT INTO sqlite1 VALUES (1), (2), (3)",
    )
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "odd")
    assert manifest.tables == {"SqliteOrders": 2, "sqlite1": 3}  # sqlite_sequence is not listed
    target = tmp_path / "restored.db"
    plain_backup.restore(store, manifest, SqliteConnector(target))
    assert dump_rows(target) == dump_rows(src)


def test_target_holding_a_sqlite_prefixed_user_table_is_not_overwritten(tmp_path: Path) -> None:
    """Guards issue 12 item 3: a target whose only table is `SQLiteStudioUsers` was
    treated as empty and replaced without --force."""
    src = make_shop(tmp_path / "shop.db", rows=50)
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    target = _make(
        tmp_path / "studio.db",
        "CREATE TABLE SQLiteStudioUsers (name)",
        "INSERT INTO SQLiteStudioUsers VALUES ('alice')",
    )
    before = target.read_bytes()
    with pytest.raises(TargetError, match=r"studio.db already holds 1 table\(s\)"):
        plain_backup.restore(store, manifest, SqliteConnector(target))
    assert target.read_bytes() == before


# -- items 5 and 15a: damaged and malformed databases ----------------------------------
def _damaged_index_db(path: Path) -> Path:
    """A real database whose index page is overwritten: it opens, quick_check fails."""
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v)")
    conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"value {i:05d}",) for i in range(2000)])
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='t_v'").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page
    data[start + 8 : start + page] = b"\xff" * (page - 8)  # keep the page header, trash the cells
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA quick_check").fetchone()[0] != "ok"
        assert check.execute("SELECT count(*) FROM t WHERE id > 0").fetchone()[0] == 2000
    check.close()
    return path


@pytest.mark.usefixtures("prefect_api")
def test_damaged_database_fails_backup_unless_allowed_then_restores(tmp_path: Path) -> None:
    """Guards issue 12 item 5: a database failing its integrity check got a green backup
    that restore then refused.

    Now the backup fails with SQLite's own message and leaves no manifest; with
    allow_damaged the backup is marked damaged (manifest, list) and restores as it is.
    """
    src = _damaged_index_db(tmp_path / "hurt.db")
    store = tmp_path / "store"
    with pytest.raises(SourceError, match=r"hurt.db is damaged \(PRAGMA quick_check: .*page"):
        backup_database(database=str(src), storage=str(store), name="hurt")
    assert list_backups(LocalStorage(store), "hurt") == []
    backup_id = backup_database(
        database=str(src), storage=str(store), name="hurt", allow_damaged=True
    )
    [manifest] = list_backups(LocalStorage(store), "hurt")
    assert manifest.backup_id == backup_id and manifest.tables == {"t": 2000}
    assert "quick_check" in manifest.extra["damaged"]
    assert manifest.summary()["damaged"] is True
    target = tmp_path / "restored.db"
    result = restore_database(name="hurt", target=str(target), storage=str(store))
    assert result["damaged"] == manifest.extra["damaged"]
    assert _table_rows(target, "t") == _table_rows(src, "t")


def test_malformed_database_exits_3_with_the_engine_message(cli: CliRunner, tmp_path: Path) -> None:
    """Guards issue 12 item 15a: "database disk image is malformed" exited 1 (a crash)
    instead of 3 (the source cannot be read), and --allow-damaged cannot hide it."""
    src = _make(tmp_path / "bad.db", "CREATE TABLE t (v)", "INSERT INTO t VALUES (1)")
    data = bytearray(src.read_bytes())
    data[100:] = b"\xee" * (len(data) - 100)  # page 1's b-tree (the schema) is garbage
    src.write_bytes(bytes(data))
    store = tmp_path / "store"
    for extra in ([], ["--allow-damaged"]):
        done = cli("backup", "--database", str(src), "--storage", str(store), *extra)
        assert done.returncode == 3, done.stderr
        assert "bad.db" in done.stderr and "malformed" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not list(store.rglob("manifest.json"))


# -- item 6: restore --force over a database another process is using -----------------
_WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("INSERT INTO customers(name) VALUES ('before restore')")
    if sys.argv[2] == "hold":
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO customers(name) VALUES ('in flight')")
    print("ready", flush=True)
    sys.stdin.readline()
    if sys.argv[2] == "hold":
        conn.execute("COMMIT")
    else:
        conn.execute("INSERT INTO customers(name) VALUES ('after restore')")
    conn.close()
    print("done", flush=True)
    """
)


def _writer(target: Path, how: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _finish(proc: subprocess.Popen[str]) -> None:
    out, _ = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0 and out == "done\n"


def _names(path: Path) -> list[str]:
    return [str(r[1]) for r in _table_rows(path, "customers")]


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_forced_restore_keeps_commits_of_a_connection_held_open(tmp_path: Path, wal: bool) -> None:
    """Guards issue 12 item 6: `restore --force` renamed a new file over a live database,
    so a writer's connection kept writing into the unlinked old file and every commit it
    made after the restore was lost. Its later commits must land in the restored data."""
    src = make_shop(tmp_path / "shop.db", rows=50)
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    target = make_shop(tmp_path / "live.db", rows=10, wal=wal)
    writer = _writer(target, "commit")
    try:
        plain_backup.restore(store, manifest, SqliteConnector(target), force=True)
    finally:
        _finish(writer)
    assert _names(target) == _names(src) + ["after restore"]
    assert _table_rows(target, "orders") == _table_rows(src, "orders")
    assert SqliteConnector(target).check() == []


def test_forced_restore_over_a_locked_database_is_refused_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Guards issue 12 item 6: while another process holds a write transaction open, a
    forced restore fails with TargetError naming the file and the cause, changes nothing,
    and the other process's commit is kept."""
    src = make_shop(tmp_path / "shop.db", rows=50)
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    target = make_shop(tmp_path / "live.db", rows=10)
    expected = _names(target) + ["before restore", "in flight"]
    writer = _writer(target, "hold")
    try:
        with pytest.raises(TargetError, match=r"live.db is in use: another connection holds"):
            plain_backup.restore(
                store, manifest, SqliteConnector(target, busy_timeout=0.5), force=True
            )
    finally:
        _finish(writer)
    assert _names(target) == expected
    assert not list(tmp_path.glob(".live.db.restore-*"))


# -- item 13: an empty database is not a backup -----------------------------------------
@pytest.mark.usefixtures("prefect_api")
def test_empty_database_fails_unless_allowed(tmp_path: Path) -> None:
    """Guards issue 12 item 13: an empty SQLite database backed up as "0 table(s)"
    although the README says a dump with no tables fails."""
    empty = _make(tmp_path / "empty.db", "PRAGMA user_version = 1")
    store = tmp_path / "store"
    with pytest.raises(SourceError, match=r"database sqlite://.*empty.db has no tables"):
        backup_database(database=str(empty), storage=str(store), name="empty")
    assert list_backups(LocalStorage(store), "empty") == []
    backup_database(database=str(empty), storage=str(store), name="empty", allow_empty=True)
    [manifest] = list_backups(LocalStorage(store), "empty")
    assert manifest.tables == {}


def test_cli_empty_database_exits_3_and_allow_empty_accepts_it(
    cli: CliRunner, tmp_path: Path
) -> None:
    """Guards issue 12 item 13 at the CLI: exit 3 naming the database; --allow-empty works."""
    empty = _make(tmp_path / "void.db", "PRAGMA user_version = 1")
    store = tmp_path / "store"
    done = cli("backup", "--database", str(empty), "--storage", str(store))
    assert done.returncode == 3 and "void.db has no tables" in done.stderr, done.stderr
    done = cli("backup", "--database", str(empty), "--storage", str(store), "--allow-empty")
    assert done.returncode == 0, done.stderr
    listed = json.loads(cli("list", "--storage", str(store), "--json").stdout)
    assert [(r["name"], r["tables"]) for r in listed] == [("void", 0)]


# -- item 15a: a full disk is a storage or target error, not a crash --------------------
def _incompressible_db(path: Path, megabytes: int = 3) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE blobs (b BLOB)")
    conn.executemany("INSERT INTO blobs VALUES (randomblob(100000))", [()] * (megabytes * 10))
    conn.commit()
    conn.close()
    return path


@pytest.mark.usefixtures("prefect_api")
def test_full_disk_under_the_restore_target_is_a_target_error(
    tmp_path: Path, tiny_disk: Path
) -> None:
    """Guards issue 12 item 15a: ENOSPC while writing a restore target exited 1 (a bare
    OSError); it is TargetError (exit 4) naming the path and "no space left on device",
    and no partial file is left beside the target."""
    src = _incompressible_db(tmp_path / "big.db")
    store = tmp_path / "store"
    backup_database(database=str(src), storage=str(store), name="big")
    target = tiny_disk / "restored.db"
    with pytest.raises(TargetError, match=r"restored.db: no space left on device") as err:
        restore_database(name="big", target=str(target), storage=str(store))
    assert err.value.exit_code == 4
    assert list(tiny_disk.iterdir()) == []


@pytest.mark.usefixtures("prefect_api")
def test_full_restore_staging_is_a_storage_error(
    tmp_path: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 12 item 15a: ENOSPC while downloading into restore staging exited 1;
    it is a StorageError (exit 5) naming the staging file, and the target is untouched."""
    src = _incompressible_db(tmp_path / "big.db")
    store = tmp_path / "store"
    backup_database(database=str(src), storage=str(store), name="big")
    monkeypatch.setenv("DB_BACKUP_STAGING", str(tiny_disk))
    target = tmp_path / "restored.db"
    with pytest.raises(StorageError, match=r"staging file .*: no space left on device") as err:
        restore_database(name="big", target=str(target), storage=str(store))
    assert err.value.exit_code == 5
    assert not target.exists()


@pytest.mark.usefixtures("prefect_api")
def test_full_local_store_is_a_storage_error_and_keeps_older_backups(
    tmp_path: Path, tiny_disk: Path
) -> None:
    """Guards issue 12 item 15a: ENOSPC in the local store is a StorageError (exit 5)
    naming the path; the older backup in the same store still restores."""
    small = make_shop(tmp_path / "small.db", rows=20)
    first = backup_database(database=str(small), storage=str(tiny_disk), name="big")
    big = _incompressible_db(tmp_path / "big.db")
    with pytest.raises(StorageError, match=r"storage path .*: no space left on device") as err:
        backup_database(database=str(big), storage=str(tiny_disk), name="big", allow_shrink=True)
    assert err.value.exit_code == 5
    assert [m.backup_id for m in list_backups(LocalStorage(tiny_disk), "big")] == [first]
    target = tmp_path / "restored.db"
    restore_database(name="big", target=str(target), storage=str(tiny_disk))
    assert dump_rows(target) == dump_rows(small)


# -- item 16b: names with control characters ---------------------------------------------
@pytest.mark.parametrize("name", ["x\n", "x\r", "a\tb", "\x1b[31mred", "x\x00", "shop\u2028"])
def test_names_with_control_characters_are_refused(name: str) -> None:
    """Guards issue 12 item 16b: `--name $'x\\n'` was accepted (a regex `$` matches before
    a final newline) and broke `list`; the error shows the name escaped."""
    with pytest.raises(ConfigError, match="is invalid") as err:
        check_name(name)
    assert repr(name) in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_a_name_with_a_newline(cli: CliRunner, tmp_path: Path) -> None:
    """Guards issue 12 item 16b at the CLI: exit 2, one line showing the name escaped,
    nothing written to the store."""
    src = make_shop(tmp_path / "shop.db", rows=20)
    store = tmp_path / "store"
    done = cli("backup", "--database", str(src), "--storage", str(store), "--name", "x\n")
    assert done.returncode == 2, done.stderr
    assert "backup name 'x\\n' is invalid" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not store.exists() or not list(store.rglob("*"))


def test_forced_restore_into_a_wal_target_with_another_page_size(tmp_path: Path) -> None:
    """Guards the in-place restore of item 6: SQLite cannot change a WAL database's page
    size through the backup API, so the restored copy takes the target's page size; the
    data restored equals the backup's."""
    src = make_shop(tmp_path / "shop.db", rows=50)
    store = LocalStorage(tmp_path / "store")
    manifest = plain_backup.backup(SqliteConnector(src), store, "shop")
    target = tmp_path / "wide.db"
    conn = sqlite3.connect(target)
    conn.execute("PRAGMA page_size = 8192")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE old (x)")
    conn.commit()
    conn.close()
    plain_backup.restore(store, manifest, SqliteConnector(target), force=True)
    assert dump_rows(target) == dump_rows(src)
    with sqlite3.connect(target) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()
    assert SqliteConnector(target).check() == []
