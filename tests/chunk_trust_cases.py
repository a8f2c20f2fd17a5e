"""Item 4 of issue 12, shared by the local and the cloud tests: a corrupted chunk is never reused.

Each case takes any Storage, so the same scenario runs on a local directory and
on the emulators.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from db_backup.catalog import list_backups
from db_backup.chunks import index as cs
from db_backup.chunks.chunking import ChunkParams
from db_backup.connectors.base import RestoreRequest, RestoreSource
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.errors import IntegrityError
from db_backup.manifest import Manifest
from db_backup.read import download_verified
from db_backup.storage.base import Storage
from tests.backup_helpers import verify_manifest_objects
from tests.incremental_helpers import commit, plain_backup, stage
from tests.sqlite_helpers import dump_rows

SMALL = ChunkParams(min_size=4096, avg_size=16384, max_size=65536)


def flip_a_byte(storage: Storage, manifest: Manifest) -> str:
    """Flip one byte in the middle of a stored chunk of ``manifest``; its storage key."""
    digest = cs.read_index(storage, manifest.objects[0]).chunks[3][0]
    key = cs.chunk_key(digest)
    blob = bytearray(storage.get_bytes(key))
    blob[len(blob) // 2] ^= 0x01
    storage.put_bytes(key, bytes(blob))
    return key


def restored_rows(storage: Storage, manifest: Manifest, work: Path) -> dict[str, object]:
    """Restore ``manifest`` into a fresh file under ``work`` the way the restore flow does."""
    work.mkdir(parents=True, exist_ok=True)
    staged = {o.key: download_verified(storage, o, work) for o in manifest.objects}
    target = work / "restored.db"
    SqliteConnector(target).restore(RestoreSource(manifest, staged), RestoreRequest())
    return dump_rows(target)


def verify_then_backup_reuploads_the_bad_chunk(storage: Storage, db: Path, tmp: Path) -> None:
    """A chunk that verify found corrupted is uploaded again by the next backup.

    On the code before the fix the next incremental reused the corrupted chunk
    ("deduplicated") and produced a backup that could not be restored.
    """
    first = plain_backup(storage, db, tmp / "s1", params=SMALL)
    victim = flip_a_byte(storage, first)
    problems = verify_manifest_objects(storage, first)
    assert len(problems) == 1 and victim in problems[0]
    second = plain_backup(storage, db, tmp / "s2", params=SMALL)
    assert restored_rows(storage, second, tmp / "r2") == dump_rows(db)
    assert second.extra["chunks"]["refreshed"] == 1
    # The chunk is content-addressed: the new upload repairs the older backup too.
    assert verify_manifest_objects(storage, first) == []
    assert cs.bad_chunks(storage) == set()


def no_commit_on_a_chunk_found_bad_meanwhile(storage: Storage, db: Path, tmp: Path) -> None:
    """A backup whose reused chunk is found corrupted while it runs writes no manifest.

    On the code before the fix the backup committed, pointing at the bad chunk.
    """
    first = plain_backup(storage, db, tmp / "s1", params=SMALL)
    outcome = stage(storage, db, tmp / "s2", params=SMALL)  # reuses every chunk
    flip_a_byte(storage, first)
    assert verify_manifest_objects(storage, first) != []  # verify runs meanwhile
    with pytest.raises(IntegrityError, match="found corrupted"):
        commit(storage, db, outcome)
    assert [m.backup_id for m in list_backups(storage)] == [first.backup_id]
    third = plain_backup(storage, db, tmp / "s3", params=SMALL)
    assert restored_rows(storage, third, tmp / "r3") == dump_rows(db)
