"""Backups of one name started in the same second never share an id (issue 12, item 1).

Every store reserves an id by creating ``<name>/<id>/reservation.json`` only if
it is absent: ``O_EXCL`` locally, ``If-None-Match: *`` on S3, ``ifGenerationMatch=0``
on GCS, ``If-None-Match: *`` (``overwrite=False``) on Azure.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from db_backup.catalog import RESERVATION_NAME, allocate_backup_id, find_backup, list_backups
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.manifest import Manifest, new_backup_id
from tests import plain_backup
from tests.sqlite_helpers import dump_rows
from tests.stores import (  # noqa: F401 - emulator fixtures used through ``stores``
    STORE_KINDS,
    StoreUnderTest,
    azurite,
    gcs_emulator,
    moto,
    stores_fixture,
)

RUNS = 4


def make_source(path: Path, seed: int) -> Path:
    """A small database whose content differs with ``seed``."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, qty INTEGER)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?)",
            [(i, f"seed {seed} item {i}", i * seed) for i in range(20 + seed * 7)],
        )
    conn.close()
    return path


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_create_exclusive_creates_once_and_never_overwrites(
    kind: str, stores: Callable[[str], StoreUnderTest]
) -> None:
    """The store primitive behind id reservation: the second create of a key fails."""
    store = stores(kind).store
    assert store.create_exclusive("n/1/r", b"first") is True
    assert store.create_exclusive("n/1/r", b"second") is False
    assert store.get_bytes("n/1/r") == b"first"
    assert [i.key for i in store.list("n/")] == ["n/1/r"]


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_concurrent_backups_of_one_name_get_distinct_ids_and_all_restore(
    kind: str, stores: Callable[[str], StoreUnderTest], tmp_path: Path
) -> None:
    """Guards issue 12 item 1: backups of one name started together in the same second
    used to share an id, one overwrote the other and both reported success. Each must
    get its own id, be listed, and restore to its own source."""
    store = stores(kind).store
    sources = [make_source(tmp_path / f"src{i}.db", seed=i + 1) for i in range(RUNS)]
    start = threading.Barrier(RUNS)

    def run(src: Path) -> Manifest:
        start.wait()
        return plain_backup.backup(SqliteConnector(src), store, "shop", level=1)

    with ThreadPoolExecutor(RUNS) as pool:
        made = list(pool.map(run, sources))
    ids = [m.backup_id for m in made]
    assert len(set(ids)) == RUNS, f"ids shared: {ids}"
    assert sorted(m.backup_id for m in list_backups(store, "shop")) == sorted(ids)
    for src, manifest in zip(sources, made, strict=True):
        listed = find_backup(store, "shop", manifest.backup_id)
        target = tmp_path / f"restored-{manifest.backup_id}.db"
        plain_backup.restore(store, listed, SqliteConnector(target))
        assert dump_rows(target) == dump_rows(src)


def test_reservation_is_not_a_backup_and_is_never_handed_out_twice(tmp_path: Path) -> None:
    """A reserved id whose backup never finished is not listed, and is not given again."""
    from db_backup.storage.local import LocalStorage

    store = LocalStorage(tmp_path / "store")
    first = allocate_backup_id(store, "shop")
    assert [i.key for i in store.list("shop/")] == [f"shop/{first}/{RESERVATION_NAME}"]
    assert list_backups(store, "shop") == []
    second = allocate_backup_id(store, "shop")
    assert second > first
    assert second >= new_backup_id()


def test_prune_treats_a_reservation_as_an_unfinished_backup(tmp_path: Path) -> None:
    """A reservation without a manifest is an orphan (removed after the grace period,
    never counted as a backup); a pruned backup loses its reservation with its objects."""
    from datetime import UTC, datetime, timedelta

    from db_backup.retention.policy import Policy
    from db_backup.retention.prune import apply_plan, plan_prune
    from db_backup.storage.local import LocalStorage

    store = LocalStorage(tmp_path / "store")
    first = plain_backup.backup(SqliteConnector(make_source(tmp_path / "a.db", 1)), store, "shop")
    second = plain_backup.backup(SqliteConnector(make_source(tmp_path / "b.db", 2)), store, "shop")
    unfinished = allocate_backup_id(store, "shop")
    now = datetime.now(UTC)
    young = plan_prune(store, "shop", Policy(keep_last=1), now)
    assert sorted(d.backup_id for d in young.decisions) == [first.backup_id, second.backup_id]
    assert [o.backup_id for o in young.young_orphans] == [unfinished]
    result = apply_plan(
        store, plan_prune(store, "shop", Policy(keep_last=1), now + timedelta(days=2))
    )
    assert result.removed == [first.backup_id]
    assert result.orphans_removed == [unfinished]
    left = sorted(i.key for i in store.list("shop/"))
    assert all(k.startswith(f"shop/{second.backup_id}/") for k in left)
    assert f"shop/{second.backup_id}/{RESERVATION_NAME}" in left
    assert [m.backup_id for m in list_backups(store, "shop")] == [second.backup_id]
