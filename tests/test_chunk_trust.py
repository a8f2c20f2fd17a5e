"""A corrupted chunk is never reused by a backup (issue 12 item 4), on a local store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db_backup.chunks import gc as chunkgc
from db_backup.chunks import index as cs
from db_backup.errors import IntegrityError
from db_backup.storage.local import LocalStorage
from tests import chunk_trust_cases as cases
from tests.backup_helpers import verify_manifest_objects
from tests.incremental_helpers import plain_backup
from tests.sqlite_helpers import make_shop


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop.db", rows=8000)


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_verify_marks_the_chunk_and_the_next_backup_uploads_it_again(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    """Guards: a backup never reuses a chunk verify found corrupted (it re-uploads it)."""
    cases.verify_then_backup_reuploads_the_bad_chunk(store, shop, tmp_path)


def test_backup_refuses_to_commit_on_a_chunk_found_bad_while_it_ran(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    """Guards: no manifest points at a chunk recorded bad before the manifest is written."""
    cases.no_commit_on_a_chunk_found_bad_meanwhile(store, shop, tmp_path)


def test_a_failed_restore_records_the_chunk_so_the_next_backup_replaces_it(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    """Guards: restore (not only verify) records what it found, so the next backup heals it."""
    first = plain_backup(store, shop, tmp_path / "s1", params=cases.SMALL)
    victim = cases.flip_a_byte(store, first)
    with pytest.raises(IntegrityError):
        cases.restored_rows(store, first, tmp_path / "r1")
    second = plain_backup(store, shop, tmp_path / "s2", params=cases.SMALL)
    assert cases.restored_rows(store, second, tmp_path / "r2") == cases.dump_rows(shop)
    assert second.extra["chunks"]["refreshed"] == 1 and victim not in cs.bad_chunks(store)


def test_gc_reports_bad_chunks_and_drops_the_record_of_a_deleted_one(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    """Guards: gc says which chunks are known bad, and forgets a record with its chunk."""
    first = plain_backup(store, shop, tmp_path / "s1", params=cases.SMALL)
    victim = cases.flip_a_byte(store, first)
    assert verify_manifest_objects(store, first) != []
    report = chunkgc.collect_garbage(store, dry_run=True)
    assert report.bad_chunks == [victim]
    assert any("found corrupted" in p for p in report.problems)
    store.delete(first.objects[0].key)  # what prune does (manifest too)
    store.delete(f"{first.name}/{first.backup_id}/manifest.json")
    old = tmp_path / "store" / victim
    os.utime(old, (0, 0))
    report = chunkgc.collect_garbage(store)
    assert report.deleted_chunks >= 1
    assert cs.bad_chunks(store) == set()
