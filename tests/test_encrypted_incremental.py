"""Encrypted incremental backups: sealed chunks and index, through the flows and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
import zstandard

from db_backup.catalog import find_backup, list_backups
from db_backup.chunks import gc as chunkgc
from db_backup.chunks.index import CHUNK_PREFIX, INDEX_SUFFIX
from db_backup.crypto import keys
from db_backup.crypto.stream import is_encrypted
from db_backup.errors import (
    ChecksumMismatch,
    EncryptionError,
    IntegrityError,
    VerificationFailed,
)
from db_backup.export import export_backup
from db_backup.manifest import Manifest
from db_backup.storage.local import LocalStorage
from tests.backup_helpers import objects_of
from tests.conftest import CliRunner
from tests.sqlite_helpers import dump_rows

pytestmark = pytest.mark.slow

PASSPHRASE = "tests: incremental and encrypted"
DAY = 86400


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> str:
    """Cheap scrypt for in-process flows, and the passphrase in the environment."""
    monkeypatch.setattr(keys, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    return PASSPHRASE


def make_db(path: Path, marker: str, rows: int = 32_000) -> Path:
    """Rows that all carry ``marker``; 32,000 rows are ~3.7 MB (~12 default-size chunks)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany(
        "INSERT INTO notes(id, body) VALUES (?, ?)",
        [(i, f"{marker} note {i} {uuid.uuid4().hex} {uuid.uuid4().hex}") for i in range(rows)],
    )
    conn.commit()
    conn.close()
    return path


def append(path: Path, marker: str, start: int, count: int = 50) -> None:
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO notes(id, body) VALUES (?, ?)",
        [(i, f"{marker} appended {i}") for i in range(start, start + count)],
    )
    conn.commit()
    conn.close()


def backup(db: Path, store: Path, name: str = "shop", encrypt: bool = True) -> Manifest:
    from db_backup.flows.backup import backup_database

    backup_id = backup_database(
        database=str(db), storage=str(store), name=name, encrypt=encrypt, mode="incremental"
    )
    return find_backup(LocalStorage(store), name, backup_id)


def restore(store: Path, target: Path, name: str = "shop", force: bool = False) -> None:
    from db_backup.flows.restore import restore_database

    restore_database(name=name, target=str(target), storage=str(store), force=force)


def chunk_paths(store: Path, encrypted: bool) -> list[Path]:
    """Chunk files of the plain namespace or of the per-key namespaces."""
    root = store / CHUNK_PREFIX
    paths = [p for p in root.rglob("*") if p.is_file()]
    keyed = [p for p in paths if p.relative_to(root).parts[0].startswith("k-")]
    return keyed if encrypted else [p for p in paths if p not in keyed]


def index_paths(store: Path, name: str) -> list[Path]:
    return [p for p in (store / name).rglob(f"*{INDEX_SUFFIX}")]


def readable(blob: bytes) -> bytes:
    """The bytes and, when they are zstd, their decoding: what anyone holding them can read."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        return blob + reader.read()
    except zstandard.ZstdError:
        return blob


def age(store: Path, days: float) -> None:
    when = time.time() - days * DAY
    for path in (store / CHUNK_PREFIX).rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def drop(store: Path, manifest: Manifest) -> None:
    """What prune does to one backup: its manifest and objects go."""
    storage = LocalStorage(store)
    for info in objects_of(storage, manifest.name, manifest.backup_id):
        storage.delete(info.key)


def test_round_trip_dedup_and_no_plaintext(
    prefect_api: str, passphrase: str, tmp_path: Path
) -> None:
    from db_backup.flows.restore import verify_backup

    marker = f"MARK-{uuid.uuid4().hex}"
    db = make_db(tmp_path / "shop.db", marker)
    store = tmp_path / "store"
    first = backup(db, store)
    assert first.mode == "incremental" and first.format_version == 2
    assert first.encryption is not None and first.encryption["algorithm"] == "aes-256-gcm"
    assert first.objects[0].encoding == ["chunked", "aes-256-gcm"]
    assert keys.backup_key_id(first) == first.encryption["key_id"]

    append(db, marker, 1_000_000)
    second = backup(db, store)
    # Only changed chunks upload (SQLite rewrites page 1 and the appended pages: ~2-3 of ~12).
    assert second.uploaded_bytes < 0.4 * first.uploaded_bytes
    assert second.extra["chunks"]["new"] < second.extra["chunks"]["total"] / 2
    assert second.deduplicated_bytes > 0.6 * second.logical_bytes

    restore(store, tmp_path / "out.db")
    assert dump_rows(tmp_path / "out.db") == dump_rows(db)
    assert verify_backup(name="shop", storage=str(store), all_backups=True) == [
        first.backup_id,
        second.backup_id,
    ]
    out = tmp_path / "export.db"
    assert second.encryption is not None
    key = keys.unlock_key(LocalStorage(store), str(second.encryption["key_id"]), passphrase)
    export_backup(LocalStorage(store), second, out, key=key)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == second.objects[0].raw_sha256

    # Every stored chunk and index of the encrypted backups is ciphertext, in the key's
    # namespace; no chunk name is the sha256 of a chunk (those names would leak content).
    sealed = chunk_paths(store, encrypted=True)
    assert sealed and not chunk_paths(store, encrypted=False)
    assert all(p.parent.parent.name == f"k-{first.encryption['key_id']}" for p in sealed)
    for path in [*sealed, *index_paths(store, "shop")]:
        blob = path.read_bytes()
        assert is_encrypted(blob)
        assert marker.encode() not in readable(blob)

    # Control: the same data in a plain incremental backup is readable after zstd decoding.
    plain = backup(db, store, name="plain", encrypt=False)
    assert plain.objects[0].encoding == ["chunked"]
    clear = b"".join(readable(p.read_bytes()) for p in chunk_paths(store, encrypted=False))
    assert marker.encode() in clear
    assert b'"chunks"' in readable(index_paths(store, "plain")[0].read_bytes())
    assert all(b'"chunks"' not in readable(p.read_bytes()) for p in index_paths(store, "shop"))
    everything = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    assert PASSPHRASE.encode() not in everything


def test_wrong_passphrase_refused_before_the_target(
    prefect_api: str, passphrase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"MARK-{uuid.uuid4().hex}"
    db = make_db(tmp_path / "shop.db", marker, rows=2_000)
    store = tmp_path / "store"
    manifest = backup(db, store)
    target = make_db(tmp_path / "target.db", "OTHER", rows=10)
    before = target.read_bytes()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "not the passphrase at all")
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        restore(store, target, force=True)
    assert target.read_bytes() == before
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        restore(store, tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()
    from db_backup.flows.restore import verify_backup

    with pytest.raises(EncryptionError, match="wrong passphrase"):
        verify_backup(name="shop", storage=str(store))
    with pytest.raises(EncryptionError, match="needs that key"):
        export_backup(LocalStorage(store), manifest, tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists()
    chunks_before = set(chunk_paths(store, encrypted=True))
    append(db, marker, 1_000_000)
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        backup(db, store)  # the key is unlocked before the dump: nothing new is stored
    assert [m.backup_id for m in list_backups(LocalStorage(store))] == [manifest.backup_id]
    assert set(chunk_paths(store, encrypted=True)) == chunks_before


def test_tampered_chunk_or_index_fails_before_the_target(
    prefect_api: str, passphrase: str, tmp_path: Path
) -> None:
    from db_backup.flows.restore import verify_backup

    db = make_db(tmp_path / "shop.db", "M", rows=10_000)  # ~1.2 MB: several chunks
    store = tmp_path / "store"
    backup(db, store)
    target = make_db(tmp_path / "target.db", "OTHER", rows=10)
    before = target.read_bytes()

    # A bit flipped in the middle of one sealed chunk.
    chunk = sorted(chunk_paths(store, encrypted=True))[0]
    good = chunk.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    chunk.write_bytes(bytes(flipped))
    with pytest.raises(EncryptionError, match="failed authentication"):
        restore(store, target, force=True)
    assert target.read_bytes() == before
    with pytest.raises(VerificationFailed, match=chunk.name[:12]):
        verify_backup(name="shop", storage=str(store))

    # A valid sealed chunk of the same key put in another chunk's place: it authenticates,
    # but its content does not match the keyed id it is stored under.
    other = next(p for p in chunk_paths(store, encrypted=True) if p != chunk)
    chunk.write_bytes(other.read_bytes())
    with pytest.raises(IntegrityError, match=chunk.name[:12]):
        restore(store, target, force=True)
    assert target.read_bytes() == before
    chunk.write_bytes(good)

    # The index altered: its sha256 no longer matches the manifest.
    index = index_paths(store, "shop")[0]
    data = bytearray(index.read_bytes())
    data[-3] ^= 0x80
    index.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="chunk index"):
        restore(store, target, force=True)
    assert target.read_bytes() == before


def test_gc_keeps_live_encrypted_chunks_and_deletes_dead_ones(
    prefect_api: str, passphrase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_db(tmp_path / "shop.db", "M", rows=6_000)
    store = tmp_path / "store"
    storage = LocalStorage(store)
    first = backup(db, store)
    append(db, "M", 1_000_000, 2_000)
    second = backup(db, store)
    drop(store, first)  # prune removed the first backup: its own chunks are dead
    age(store, 30)
    all_chunks = set(chunk_paths(store, encrypted=True))

    # Without the passphrase nothing of a key in use is deleted, and GC says why.
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    locked = chunkgc.collect_garbage(storage)
    assert locked.deleted_chunks == 0 and locked.kept_locked_chunks == len(all_chunks)
    assert second.encryption is not None
    assert any(str(second.encryption["key_id"]) in p for p in locked.problems)
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        chunkgc.collect_garbage(storage, passphrase="a wrong passphrase")
    assert set(chunk_paths(store, encrypted=True)) == all_chunks

    report = chunkgc.collect_garbage(storage, passphrase=passphrase)
    left = set(chunk_paths(store, encrypted=True))
    assert report.deleted_chunks >= 1 and report.deleted_chunks == len(all_chunks - left)
    assert report.live_chunks == len(left) and report.problems == []
    monkeypatch.setenv(keys.PASSPHRASE_ENV, passphrase)
    restore(store, tmp_path / "out.db")
    assert dump_rows(tmp_path / "out.db") == dump_rows(db)

    # No backup of the key left: its chunks are dead and go without any passphrase.
    drop(store, second)
    assert list_backups(storage) == []
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    gone = chunkgc.collect_garbage(storage)
    assert gone.deleted_chunks == len(left) and not chunk_paths(store, encrypted=True)


def test_encrypted_incremental_from_the_command_line(cli: CliRunner, tmp_path: Path) -> None:
    marker = f"MARK-{uuid.uuid4().hex}"
    db = make_db(tmp_path / "shop.db", marker, rows=3_000)
    store = str(tmp_path / "store")
    env = {keys.PASSPHRASE_ENV: PASSPHRASE}
    args = ["--database", str(db), "--storage", store, "--mode", "incremental", "--encrypt"]
    done = cli("backup", *args, env=env)
    assert done.returncode == 0, done.stderr
    manifest = find_backup(LocalStorage(store), "shop")
    assert manifest.objects[0].encoding == ["chunked", "aes-256-gcm"]
    target = tmp_path / "restored.db"
    restore_args = ["latest", "--name", "shop", "--to", str(target), "--storage", store]
    wrong = cli("restore", *restore_args, env={keys.PASSPHRASE_ENV: "wrong passphrase!"})
    assert wrong.returncode == EncryptionError.exit_code
    assert "wrong passphrase" in wrong.stderr and not target.exists()
    ok = cli("restore", *restore_args, env=env)
    assert ok.returncode == 0, ok.stderr
    assert dump_rows(target) == dump_rows(db)
    exported = tmp_path / "export.db"
    ex = cli(
        "export", "latest", "--name", "shop", "--to", str(exported), "--storage", store, env=env
    )
    assert ex.returncode == 0, ex.stderr
    assert hashlib.sha256(exported.read_bytes()).hexdigest() == manifest.objects[0].raw_sha256
    gc = cli("gc", "--storage", store, "--json")  # no passphrase: the key's chunks are kept
    assert gc.returncode == 0, gc.stderr
    report = json.loads(gc.stdout)
    assert report["deleted_chunks"] == 0 and report["kept_locked_chunks"] > 0
    assert "no passphrase was given" in gc.stderr
    with_key = cli("gc", "--storage", store, env=env)  # the passphrase reads the sealed index
    assert with_key.returncode == 0, with_key.stderr
    assert "no passphrase" not in with_key.stdout + with_key.stderr
    assert "deleted 0" in with_key.stdout
    for path in chunk_paths(Path(store), encrypted=True):
        assert marker.encode() not in readable(path.read_bytes())


def test_export_of_an_encrypted_full_backup(
    prefect_api: str, passphrase: str, tmp_path: Path
) -> None:
    """Export now decrypts full encrypted backups too (it used to refuse them)."""
    from db_backup.flows.backup import backup_database

    db = make_db(tmp_path / "shop.db", "M", rows=500)
    store = tmp_path / "store"
    backup_database(database=str(db), storage=str(store), name="shop", encrypt=True)
    manifest = find_backup(LocalStorage(store), "shop")
    assert manifest.mode == "full" and manifest.encryption is not None
    out = tmp_path / "export.db"
    with pytest.raises(EncryptionError, match="needs that key"):
        export_backup(LocalStorage(store), manifest, out)
    key = keys.unlock_key(LocalStorage(store), str(manifest.encryption["key_id"]), passphrase)
    assert export_backup(LocalStorage(store), manifest, out, key=key) == [out]
    assert dump_rows(out) == dump_rows(db)


def test_gc_keeps_chunks_of_a_running_encrypted_backup(passphrase: str, tmp_path: Path) -> None:
    """An encrypted backup still running (index uploaded, no manifest yet): without the
    passphrase GC keeps its key's chunks; with it, GC reads the sealed index."""
    from db_backup import operations as ops
    from db_backup.chunks import incremental as inc
    from db_backup.chunks.chunking import ChunkParams
    from db_backup.connectors.sqlite.logical import SqliteConnector

    db = make_db(tmp_path / "shop.db", "M", rows=2_000)
    store = tmp_path / "store"
    storage = LocalStorage(store)
    key = keys.create_key(storage, passphrase)
    small = ChunkParams(min_size=4096, avg_size=16384, max_size=65536)
    (tmp_path / "s").mkdir()
    sink = inc.chunking_sink(storage, tmp_path / "s", params=small, key=key)
    outcome = ops.stage_dump(SqliteConnector(db), sink)
    staged = outcome.objects[0]
    assert staged.encoding == ["chunked", "aes-256-gcm"]
    ops.upload_staged(storage, staged, f"shop/20260101T000000Z/{staged.filename}")
    age(store, 30)  # the chunks look old; the index (the running backup) is young
    chunks = set(chunk_paths(store, encrypted=True))
    assert len(chunks) > 3

    locked = chunkgc.collect_garbage(storage, dry_run=True)
    assert locked.kept_locked_chunks == len(chunks) and locked.deleted_chunks == 0
    report = chunkgc.collect_garbage(storage, passphrase=passphrase)
    assert report.inflight_indexes == 1 and report.live_chunks == len(chunks)
    assert report.deleted_chunks == 0 and set(chunk_paths(store, encrypted=True)) == chunks
