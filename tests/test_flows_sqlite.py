"""The backup, restore and verify flows end to end on a real Prefect API."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from db_backup.catalog import list_backups
from db_backup.errors import (
    BackupNotFound,
    ChecksumMismatch,
    IntegrityError,
    ManifestError,
    SourceError,
    StorageError,
    TargetError,
)
from db_backup.flows.backup import backup_database
from db_backup.flows.restore import restore_database, verify_backup
from db_backup.storage import LocalStorage
from tests.sqlite_helpers import dump_rows, make_shop

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop.db", rows=2000)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def only_object(store: Path, name: str, backup_id: str) -> Path:
    [obj] = [p for p in (store / name / backup_id).iterdir() if p.suffix == ".zst"]
    return obj


def test_backup_then_restore_round_trip(shop: Path, store: Path, tmp_path: Path) -> None:
    backup_id = backup_database(database=str(shop), storage=str(store))
    [manifest] = list_backups(LocalStorage(store), "shop")
    assert manifest.backup_id == backup_id
    assert manifest.flow_run_id and manifest.tables["orders"] == 2000
    assert manifest.compression == {"algorithm": "zstd", "level": 3}
    assert manifest.tool == "sqlite3-backup-api" and manifest.stored_bytes < manifest.logical_bytes
    assert only_object(store, "shop", backup_id).name == "shop.sqlite3.zst"
    target = tmp_path / "restored.db"
    result = restore_database(name="shop", target=str(target), storage=str(store))
    assert result["backup_id"] == backup_id
    assert dump_rows(target) == dump_rows(shop)
    assert verify_backup(name="shop", storage=str(store)) == [backup_id]


def test_failed_backup_leaves_no_manifest_and_keeps_older_ones(
    shop: Path, store: Path, tmp_path: Path
) -> None:
    first = backup_database(database=str(shop), storage=str(store), name="shop")
    shop.write_bytes(b"this is no longer a database" * 100)
    with pytest.raises(SourceError, match="is not a SQLite database"):
        backup_database(database=str(shop), storage=str(store), name="shop")
    assert [m.backup_id for m in list_backups(LocalStorage(store), "shop")] == [first]
    assert sorted(p.name for p in (store / "shop").iterdir()) == [first]


def test_full_staging_disk_fails_cleanly(
    tmp_path: Path, store: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.db"
    with sqlite3.connect(big) as conn:
        conn.execute("CREATE TABLE blobs (b BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (randomblob(100000))", [()] * 60)
    small = make_shop(tmp_path / "small.db")
    first = backup_database(database=str(small), storage=str(store), name="big")
    monkeypatch.setenv("DB_BACKUP_STAGING", str(tiny_disk))
    with pytest.raises(StorageError, match="No space left on device"):
        backup_database(database=str(big), storage=str(store), name="big", allow_shrink=True)
    assert [m.backup_id for m in list_backups(LocalStorage(store), "big")] == [first]
    assert list(tiny_disk.iterdir()) == []


def test_suspiciously_small_dump_fails_unless_allowed(
    shop: Path, store: Path, tmp_path: Path
) -> None:
    backup_database(database=str(shop), storage=str(store), name="shop")
    with sqlite3.connect(shop) as conn:
        conn.execute("DROP TABLE orders")
        conn.execute("DROP TABLE events")
        conn.execute("DROP TABLE customers")
    conn.close()
    sqlite3.connect(shop).execute("VACUUM").connection.close()
    with pytest.raises(SourceError, match="shop.db has no tables; pass allow_empty"):
        backup_database(database=str(shop), storage=str(store), name="shop", allow_shrink=True)
    with pytest.raises(SourceError, match="dump has no tables but backup shop/"):
        backup_database(database=str(shop), storage=str(store), name="shop", allow_empty=True)
    assert len(list_backups(LocalStorage(store), "shop")) == 1
    backup_database(
        database=str(shop), storage=str(store), name="shop", allow_shrink=True, allow_empty=True
    )
    assert len(list_backups(LocalStorage(store), "shop")) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_object_is_caught_before_the_target_is_touched(
    shop: Path, store: Path, tmp_path: Path, damage: str
) -> None:
    backup_id = backup_database(database=str(shop), storage=str(store))
    obj = only_object(store, "shop", backup_id)
    data = bytearray(obj.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        obj.write_bytes(bytes(data))
    elif damage == "truncate":
        obj.write_bytes(bytes(data[: len(data) - 100]))
    else:
        obj.unlink()
    target = tmp_path / "target.db"
    target.write_bytes(b"")  # an existing, empty target that must stay exactly so
    expected = ChecksumMismatch if damage == "flip" else IntegrityError
    with pytest.raises(expected, match=obj.name):
        restore_database(name="shop", target=str(target), storage=str(store), backup=backup_id)
    assert target.read_bytes() == b""
    with pytest.raises(IntegrityError, match=f"shop/{backup_id} failed verification"):
        verify_backup(name="shop", storage=str(store), backup=backup_id)


def test_unknown_manifest_version_and_missing_ids(shop: Path, store: Path, tmp_path: Path) -> None:
    backup_id = backup_database(database=str(shop), storage=str(store))
    path = store / "shop" / backup_id / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="format_version 99"):
        restore_database(
            name="shop", target=str(tmp_path / "t.db"), storage=str(store), backup=backup_id
        )
    skipped: list[str] = []
    assert list_backups(LocalStorage(store), "shop", on_skip=lambda k, e: skipped.append(k)) == []
    assert skipped == [f"shop/{backup_id}/manifest.json"]
    with pytest.raises(BackupNotFound, match="shop/20200101T000000Z not found"):
        restore_database(
            name="shop",
            target=str(tmp_path / "t.db"),
            storage=str(store),
            backup="20200101T000000Z",
        )
    with pytest.raises(BackupNotFound, match="no backups named 'other'"):
        restore_database(name="other", target=str(tmp_path / "t.db"), storage=str(store))


def test_restore_into_target_with_data_needs_force(shop: Path, store: Path, tmp_path: Path) -> None:
    backup_database(database=str(shop), storage=str(store))
    target = make_shop(tmp_path / "other.db", rows=10)
    before = target.read_bytes()
    with pytest.raises(TargetError, match="already holds"):
        restore_database(name="shop", target=str(target), storage=str(store))
    assert target.read_bytes() == before
    restore_database(name="shop", target=str(target), storage=str(store), force=True)
    assert dump_rows(target) == dump_rows(shop)


def test_sqlite_database_block(shop: Path, store: Path, tmp_path: Path) -> None:
    from db_backup.blocks import SqliteDatabase

    SqliteDatabase(path=str(shop)).save("shop-block", overwrite=True)
    backup_id = backup_database(database="sqlite-database/shop-block", storage=str(store))
    assert (store / "shop-block" / backup_id / "manifest.json").exists()
    from prefect.filesystems import LocalFileSystem

    LocalFileSystem(basepath=str(tmp_path / "via-block")).save("local-backups", overwrite=True)
    second = backup_database(database=str(shop), storage="local-file-system/local-backups")
    assert (tmp_path / "via-block" / "shop" / second / "manifest.json").exists()
    from db_backup.errors import ConfigError

    with pytest.raises(ConfigError, match="block 'local-file-system/missing' does not exist"):
        backup_database(database=str(shop), storage="local-file-system/missing")
