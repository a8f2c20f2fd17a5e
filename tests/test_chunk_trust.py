"""A corrupted chunk is never reused by a backup (issue 12 item 4), on a local store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db_backup.chunks import gc as chunkgc
from db_backup.chunks import index as cs
from db_backup.crypto import keys
from db_backup.errors import EncryptionError, IntegrityError
from db_backup.storage.local import LocalStorage
from tests import chunk_trust_cases as cases
from tests import test_encrypted_incremental as enc
from tests.backup_helpers import verify_manifest_objects
from tests.incremental_helpers import plain_backup
from tests.sqlite_helpers import make_shop


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop.db", rows=8000)


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> str:
    """Cheap scrypt, and the passphrase in the environment (as test_encrypted_incremental)."""
    monkeypatch.setattr(keys, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})
    monkeypatch.setenv(keys.PASSPHRASE_ENV, enc.PASSPHRASE)
    return enc.PASSPHRASE


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


def test_an_encrypted_chunk_found_altered_is_sealed_again_by_the_next_backup(
    prefect_api: str, passphrase: str, tmp_path: Path
) -> None:
    """Guards: encrypted incremental backups (chunks under _chunks/k-<key id>/) too: a chunk a
    restore found altered is recorded, the next backup through the flow seals and uploads it
    again, and that backup restores equal to the source."""
    db = enc.make_db(tmp_path / "shop.db", "M", rows=10_000)
    store = tmp_path / "store"
    enc.backup(db, store)
    chunk = sorted(enc.chunk_paths(store, encrypted=True))[0]
    flipped = bytearray(chunk.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    chunk.write_bytes(bytes(flipped))
    with pytest.raises(EncryptionError):
        enc.restore(store, tmp_path / "first.db")
    recorded = cs.bad_chunks(LocalStorage(store))
    assert [k.rsplit("/", 1)[1] for k in recorded] == [chunk.name]
    second = enc.backup(db, store)
    assert second.extra["chunks"]["refreshed"] == 1
    enc.restore(store, tmp_path / "second.db")
    assert cases.dump_rows(tmp_path / "second.db") == cases.dump_rows(db)
    assert cs.bad_chunks(LocalStorage(store)) == set()
