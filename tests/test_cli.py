"""The db-backup console script, end to end in a subprocess."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import CliRunner
from tests.sqlite_helpers import dump_rows, make_shop


def test_backup_list_verify_restore(cli: CliRunner, tmp_path: Path) -> None:
    make_shop(tmp_path / "test.db", rows=300)
    done = cli("backup", "--type", "sqlite", "--database", "test.db")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    backup_id = lines[-1]
    assert len(backup_id) == 16 and backup_id.endswith("Z")
    assert "Backed up" in done.stdout and "test/" + backup_id in done.stdout
    assert (tmp_path / "backups" / "test" / backup_id / "manifest.json").exists()

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["id"] == backup_id and entry["name"] == "test" and entry["engine"] == "sqlite"
    assert entry["size_bytes"] > 0 and len(entry["sha256"]) == 64 and entry["created_at"]

    verified = cli("verify", "latest", "--name", "test")
    assert verified.returncode == 0 and f"ok test/{backup_id}" in verified.stdout

    restored = cli("restore", backup_id, "--name", "test", "--to", "copy.db")
    assert restored.returncode == 0, restored.stderr
    assert dump_rows(tmp_path / "copy.db") == dump_rows(tmp_path / "test.db")

    partial = cli(
        "restore", "latest", "--name", "test", "--to", "part.db", "--tables", "orders,events"
    )
    assert partial.returncode == 0, partial.stderr
    assert set(dump_rows(tmp_path / "part.db")) == {"orders", "events"}


def test_errors_are_one_line_and_non_zero(cli: CliRunner, tmp_path: Path) -> None:
    missing = cli("backup", "--type", "sqlite", "--database", "missing.db")
    assert missing.returncode == 3  # a source problem (README: exit codes)
    assert missing.stderr.strip().splitlines() == [
        f"error: SQLite database {tmp_path / 'missing.db'} does not exist"
    ]
    assert not (tmp_path / "backups").exists() or not list(
        (tmp_path / "backups").rglob("manifest.json")
    )

    make_shop(tmp_path / "test.db", rows=50)
    assert cli("backup", "--type", "sqlite", "--database", "test.db").returncode == 0
    occupied = make_shop(tmp_path / "occupied.db", rows=5)
    before = occupied.read_bytes()
    refused = cli("restore", "latest", "--name", "test", "--to", "occupied.db")
    assert refused.returncode == 4
    assert len(refused.stderr.strip().splitlines()) == 1 and "use --force" in refused.stderr
    assert occupied.read_bytes() == before

    unknown = cli("restore", "20200101T000000Z", "--name", "test", "--to", "x.db")
    assert unknown.returncode == 6 and "test/20200101T000000Z not found" in unknown.stderr
    assert not (tmp_path / "x.db").exists()

    bad_table = cli("restore", "latest", "--name", "test", "--to", "y.db", "--tables", "nope")
    assert bad_table.returncode == 2 and "nope not in backup" in bad_table.stderr


def test_storage_comes_from_the_environment(cli: CliRunner, tmp_path: Path) -> None:
    store = tmp_path / "elsewhere"
    with sqlite3.connect(tmp_path / "env.db") as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    env = {"DB_BACKUP_STORAGE": str(store)}
    done = cli("backup", "--type", "sqlite", "--database", "env.db", env=env)
    assert done.returncode == 0, done.stderr
    assert list(store.glob("env/*/manifest.json"))
    listed = cli("list", env=env)
    assert "env" in listed.stdout and done.stdout.strip().splitlines()[-1] in listed.stdout
