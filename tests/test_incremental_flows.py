"""Incremental mode end to end: the Prefect flows and the ``db-backup`` command line."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from db_backup.catalog import find_backup
from db_backup.storage.local import LocalStorage
from tests.conftest import CliRunner
from tests.sqlite_helpers import dump_rows, make_shop

pytestmark = pytest.mark.slow


def append_orders(db: Path, start: int, count: int) -> None:
    """Time-ordered appends: new ids and index keys sort after the existing ones."""
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO orders(id, customer_id, note, payload, total) VALUES (?, ?, ?, ?, ?)",
        [(i, i, f"new {i}", b"p" * 20, 2.5) for i in range(start, start + count)],
    )
    conn.commit()
    conn.close()


def test_incremental_flows_round_trip(prefect_api: str, tmp_path: Path) -> None:
    from db_backup.flows.backup import backup_database
    from db_backup.flows.restore import restore_database, verify_backup

    db = make_shop(tmp_path / "shop.db", rows=120_000)
    storage = str(tmp_path / "store")
    first_id = backup_database(database=str(db), storage=storage, mode="incremental")
    append_orders(db, 1_000_000, 500)
    second_id = backup_database(database=str(db), storage=storage, mode="incremental")
    store = LocalStorage(storage)
    first = find_backup(store, "shop", first_id)
    second = find_backup(store, "shop", second_id)
    assert second.mode == "incremental"
    assert second.uploaded_bytes < 0.2 * first.uploaded_bytes
    assert second.deduplicated_bytes > 0.7 * second.logical_bytes
    assert verify_backup(name="shop", storage=storage, all_backups=True) == [first_id, second_id]

    restore_database(name="shop", target=str(tmp_path / "out.db"), storage=storage)
    assert dump_rows(tmp_path / "out.db") == dump_rows(db)
    restore_database(
        name="shop", target=str(tmp_path / "part.db"), storage=storage, tables=["orders"]
    )
    assert dump_rows(tmp_path / "part.db")["orders"] == dump_rows(db)["orders"]


def test_incremental_from_the_command_line(cli: CliRunner, tmp_path: Path) -> None:
    db = make_shop(tmp_path / "shop.db", rows=60_000)
    store = str(tmp_path / "store")
    full = cli("backup", "--type", "sqlite", "--database", str(db), "--storage", store)
    assert full.returncode == 0, full.stderr
    inc1 = cli("backup", "--database", str(db), "--storage", store, "--mode", "incremental")
    assert inc1.returncode == 0, inc1.stderr
    assert "incremental:" in inc1.stdout
    append_orders(db, 1_000_000, 200)
    inc2 = cli("backup", "--database", str(db), "--storage", store, "--mode", "incremental")
    assert inc2.returncode == 0, inc2.stderr
    inc2_id = inc2.stdout.strip().splitlines()[-1]

    listed = cli("list", "--storage", store, "--json")
    records = {r["id"]: r for r in json.loads(listed.stdout)}
    assert len(records) == 3
    for record in records.values():
        assert record["logical_bytes"] > 0 and record["uploaded_bytes"] > 0
        assert "deduplicated_bytes" in record
    full_rec = records[full.stdout.strip().splitlines()[-1]]
    assert full_rec["mode"] == "full" and full_rec["uploaded_bytes"] == full_rec["size_bytes"]
    second = records[inc2_id]
    assert second["mode"] == "incremental"
    assert (
        second["uploaded_bytes"]
        < 0.3 * records[inc1.stdout.strip().splitlines()[-1]]["uploaded_bytes"]
    )
    assert second["deduplicated_bytes"] > 0.5 * second["logical_bytes"]

    out = tmp_path / "restored.db"
    restored = cli("restore", "latest", "--name", "shop", "--to", str(out), "--storage", store)
    assert restored.returncode == 0, restored.stderr
    assert dump_rows(out) == dump_rows(db)

    exported = tmp_path / "export.sqlite3"
    ex = cli("export", inc2_id, "--name", "shop", "--to", str(exported), "--storage", store)
    assert ex.returncode == 0, ex.stderr
    want = find_backup(LocalStorage(store), "shop", inc2_id).objects[0].raw_sha256
    assert hashlib.sha256(exported.read_bytes()).hexdigest() == want
    assert dump_rows(exported) == dump_rows(db)
    again = cli("export", inc2_id, "--name", "shop", "--to", str(exported), "--storage", store)
    assert again.returncode == 4 and "exists; use --force" in again.stderr  # a target problem

    gc = cli("gc", "--storage", store, "--dry-run", "--json")
    assert gc.returncode == 0, gc.stderr
    report = json.loads(gc.stdout)
    assert report["backups"] == 3 and report["deleted_chunks"] == 0
    assert report["live_chunks"] == report["chunks"] > 0

    bad = cli("backup", "--database", str(db), "--storage", store, "--mode", "delta")
    assert bad.returncode == 2 and "mode" in bad.stderr
    short = cli("gc", "--storage", store, "--grace", "1h")
    assert short.returncode == 2 and "grace" in short.stderr


def test_gc_flow_reports_and_refuses_short_grace(prefect_api: str, tmp_path: Path) -> None:
    from db_backup.errors import ConfigError
    from db_backup.flows.backup import backup_database
    from db_backup.flows.gc import gc_chunks

    db = make_shop(tmp_path / "shop.db", rows=2000)
    storage = str(tmp_path / "store")
    backup_database(database=str(db), storage=storage, mode="incremental")
    report = gc_chunks(storage=storage)
    assert report["backups"] == 1 and report["deleted_chunks"] == 0
    assert report["live_chunks"] == report["chunks"] > 0
    with pytest.raises(ConfigError, match="grace"):
        gc_chunks(storage=storage, grace_hours=1)
