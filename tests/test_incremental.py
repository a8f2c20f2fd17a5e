"""Incremental backups through the chunk store, on real local storage (no Prefect)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from db_backup import operations as ops
from db_backup.catalog import list_backups
from db_backup.chunks import gc as chunkgc
from db_backup.chunks import incremental as inc
from db_backup.chunks import index as cs
from db_backup.chunks import reader as chunk_reader
from db_backup.chunks.chunking import ChunkParams
from db_backup.connectors.base import RestoreRequest, RestoreSource
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.errors import (
    ChecksumMismatch,
    ConfigError,
    IntegrityError,
    ManifestError,
)
from db_backup.export import export_backup
from db_backup.manifest import Manifest, parse_manifest
from db_backup.pipeline import DumpSink
from db_backup.read import download_verified
from db_backup.storage.local import LocalStorage
from tests.backup_helpers import objects_of, verify_manifest_objects
from tests.incremental_helpers import commit, plain_backup, stage
from tests.sqlite_helpers import dump_rows, make_shop

SMALL = ChunkParams(min_size=4096, avg_size=16384, max_size=65536)
DAY = 86400


def add_orders(db: Path, start: int, count: int) -> None:
    """Append orders whose indexed keys sort last, as time-ordered data does."""
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO orders(id, customer_id, note, payload, total) VALUES (?, ?, ?, ?, ?)",
        [(i, i, f"new {i}", b"p" * 20, 2.5) for i in range(start, start + count)],
    )
    conn.commit()
    conn.close()


def restore_to(storage: LocalStorage, manifest: Manifest, target: Path, work: Path, **kw: object):
    """The restore flow's steps: download+verify every object, then the connector restores."""
    work.mkdir(parents=True, exist_ok=True)
    staged = {o.key: download_verified(storage, o, work) for o in manifest.objects}
    request = RestoreRequest(**kw)  # type: ignore[arg-type]
    return SqliteConnector(target).restore(RestoreSource(manifest, staged), request)


def age_chunks(root: Path, days: float) -> None:
    """Pretend every chunk was uploaded ``days`` ago."""
    when = time.time() - days * DAY
    for path in (root / "_chunks").rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def chunk_files(root: Path) -> set[str]:
    return {p.name for p in (root / "_chunks").rglob("*") if p.is_file()}


def prune(storage: LocalStorage, manifest: Manifest) -> None:
    """What prune does: remove one backup's manifest and objects."""
    for info in objects_of(storage, manifest.name, manifest.backup_id):
        storage.delete(info.key)


def full_backup(storage: LocalStorage, db: Path, staging: Path) -> Manifest:
    """A full (single-object) backup through the plain steps."""
    staging.mkdir(parents=True, exist_ok=True)
    connector = SqliteConnector(db)
    outcome = ops.stage_dump(connector, DumpSink(staging))
    stored = [
        ops.upload_staged(storage, o, ops.object_key("full", "20260101T000000Z", o.filename))
        for o in outcome.objects
    ]
    manifest = ops.build_manifest(
        name="full",
        backup_id="20260101T000000Z",
        connector=connector,
        outcome=outcome,
        stored=stored,
        compression={},
        flow_run_id=None,
    )
    ops.commit_manifest(storage, manifest)
    return manifest


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop.db", rows=30000)


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_incremental_backup_restores_equal_to_source(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    assert m.mode == "incremental" and m.format_version == 2
    assert m.objects[0].encoding == ["chunked"]
    assert m.logical_bytes == shop.stat().st_size
    assert m.uploaded_bytes == m.stored_bytes  # first backup: everything is new
    restore_to(store, m, tmp_path / "out.db", tmp_path / "r")
    assert dump_rows(tmp_path / "out.db") == dump_rows(shop)


def test_second_backup_uploads_only_changed_chunks_and_restores_alone(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    first = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    add_orders(shop, 100_000, 300)
    second = plain_backup(store, shop, tmp_path / "s2", params=SMALL)
    assert second.uploaded_bytes < 0.25 * first.uploaded_bytes
    assert second.deduplicated_bytes > 0.6 * second.logical_bytes
    assert second.extra["chunks"]["reused"] > second.extra["chunks"]["new"]
    # Every incremental backup restores on its own: drop the first entirely.
    prune(store, first)
    restore_to(store, second, tmp_path / "out.db", tmp_path / "r")
    assert dump_rows(tmp_path / "out.db") == dump_rows(shop)


def test_selective_table_restore_from_incremental(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    target = tmp_path / "partial.db"
    result = restore_to(store, m, target, tmp_path / "r", tables=["customers"])
    assert result.tables == ["customers"]
    assert dump_rows(target)["customers"] == dump_rows(shop)["customers"]
    assert "orders" not in dump_rows(target)


def test_verify_checks_every_chunk(shop: Path, store: LocalStorage, tmp_path: Path) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    assert verify_manifest_objects(store, m) == []
    victim = sorted((tmp_path / "store" / "_chunks").rglob("*"))[-1]
    victim.unlink()
    problems = verify_manifest_objects(store, m)
    assert len(problems) == 1 and "missing" in problems[0] and victim.name in problems[0]


def test_corrupted_chunk_is_caught_before_the_target_is_touched(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    index = cs.read_index(store, m.objects[0])
    digest, raw, stored = index.chunks[len(index.chunks) // 2]
    # Bit rot in the middle of a stored chunk.
    path = tmp_path / "store" / cs.chunk_key(digest)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    target = make_shop(tmp_path / "target.db", rows=50)
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    with pytest.raises(IntegrityError, match=digest[:12]):
        restore_to(store, m, target, tmp_path / "r", force=True)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    assert stored == len(blob)
    with pytest.raises(IntegrityError):
        ops.verify_stored(store, m.objects[0])


def test_chunk_whose_content_differs_from_its_name_is_a_checksum_mismatch(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    import zstandard

    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    digest, raw, _ = cs.read_index(store, m.objects[0]).chunks[0]
    forged = zstandard.ZstdCompressor().compress(b"x" * raw)  # a valid frame, wrong bytes
    store.put_bytes(cs.chunk_key(digest), forged)
    with pytest.raises(ChecksumMismatch, match="altered or corrupted"):
        chunk_reader._fetch(store, digest, raw, len(forged), m.objects[0].key)
    with pytest.raises(ChecksumMismatch, match=digest[:12]):
        download_verified(store, m.objects[0], tmp_path)


def test_a_chunk_renewed_with_another_encoding_still_restores(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    """Stored sizes may change when a later backup renews a chunk; the raw hash decides."""
    import zstandard

    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    for digest, _, _ in cs.read_index(store, m.objects[0]).chunks:
        raw = zstandard.ZstdDecompressor().decompress(store.get_bytes(cs.chunk_key(digest)))
        store.put_bytes(cs.chunk_key(digest), zstandard.ZstdCompressor(level=19).compress(raw))
    assert verify_manifest_objects(store, m) == []
    restore_to(store, m, tmp_path / "out.db", tmp_path / "r")
    assert dump_rows(tmp_path / "out.db") == dump_rows(shop)


def test_tampered_index_is_refused(shop: Path, store: LocalStorage, tmp_path: Path) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    key = m.objects[0].key
    store.put_bytes(key, store.get_bytes(key)[:-1] + b"\0")
    with pytest.raises(IntegrityError, match="chunk index"):
        download_verified(store, m.objects[0], tmp_path)


def test_export_equals_the_original_dump(shop: Path, store: LocalStorage, tmp_path: Path) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    out = tmp_path / "exported.sqlite3"
    assert export_backup(store, m, out) == [out]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == m.objects[0].raw_sha256
    # The dump a full backup stores (SQLite's online-backup copy) is byte for byte the same.
    full = full_backup(store, shop, tmp_path / "full")
    out_full = tmp_path / "exported-full.sqlite3"
    export_backup(store, full, out_full)
    assert out.read_bytes() == out_full.read_bytes()
    assert full.objects[0].raw_sha256 == m.objects[0].raw_sha256
    assert dump_rows(out) == dump_rows(shop)
    with pytest.raises(Exception, match="exists"):
        export_backup(store, m, out)


def test_gc_deletes_unreferenced_old_chunks_only(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    first = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    conn = sqlite3.connect(shop)
    conn.execute("UPDATE orders SET note = 'changed ' || id WHERE id % 3 = 0")
    conn.commit()
    conn.close()
    second = plain_backup(store, shop, tmp_path / "s2", params=SMALL)
    only_first = chunk_files(root) - {
        d for d, _, _ in cs.read_index(store, second.objects[0]).chunks
    }
    assert only_first
    prune(store, first)
    young = chunkgc.collect_garbage(store)  # nothing is old enough yet
    assert young.deleted_chunks == 0 and young.kept_young_chunks == len(only_first)
    age_chunks(root, 30)
    report = chunkgc.collect_garbage(store)
    assert report.deleted_chunks == len(only_first)
    assert chunk_files(root).isdisjoint(only_first)
    assert verify_manifest_objects(store, second) == []
    restore_to(store, second, tmp_path / "out.db", tmp_path / "r")
    assert dump_rows(tmp_path / "out.db") == dump_rows(shop)
    again = chunkgc.collect_garbage(store)
    assert again.deleted_chunks == 0 and again.live_chunks == again.chunks


def test_gc_dry_run_deletes_nothing(shop: Path, store: LocalStorage, tmp_path: Path) -> None:
    first = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    prune(store, first)
    age_chunks(tmp_path / "store", 30)
    before = chunk_files(tmp_path / "store")
    report = chunkgc.collect_garbage(store, dry_run=True)
    assert report.deleted_chunks == len(before) > 0
    assert chunk_files(tmp_path / "store") == before


def test_gc_keeps_chunks_of_an_inflight_backup(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    store.delete(f"{m.name}/{m.backup_id}/manifest.json")  # index uploaded, manifest not yet
    age_chunks(tmp_path / "store", 30)
    report = chunkgc.collect_garbage(store)
    assert report.inflight_indexes == 1 and report.deleted_chunks == 0


def test_gc_refuses_a_short_grace_and_unreadable_manifests(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="grace"):
        chunkgc.collect_garbage(store, grace=timedelta(days=1))
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    key = f"{m.name}/{m.backup_id}/manifest.json"
    store.put_bytes(
        key, store.get_bytes(key).replace(b'"format_version": 2', b'"format_version": 9')
    )
    age_chunks(tmp_path / "store", 30)
    with pytest.raises(ManifestError, match="refused"):
        chunkgc.collect_garbage(store)
    assert chunk_files(tmp_path / "store")


def test_prune_gc_and_a_concurrent_backup_lose_nothing(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    """GC plans while old chunks are unreferenced; a backup then relies on them; GC deletes."""
    root = tmp_path / "store"
    first = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    prune(store, first)  # prune removed the only manifest: every chunk is unreferenced
    age_chunks(root, 30)
    plan = chunkgc.plan_garbage(store)  # GC decided: all chunks are garbage
    assert len(plan.candidates) == len(chunk_files(root))
    add_orders(shop, 100_000, 50)
    # The backup meets the old chunks: too old to trust, so it uploads them again.
    outcome = stage(store, shop, tmp_path / "s2", SMALL)
    report = chunkgc.delete_garbage(store, plan)  # GC resumes: re-checks ages, keeps them
    needed = set(outcome.objects[0].digests)  # type: ignore[attr-defined]
    assert report.kept_young_chunks >= len(
        needed & {i.key.rsplit("/", 1)[1] for i in plan.candidates}
    )
    assert report.deleted_chunks <= 3  # only chunks the new backup does not use (changed ones)
    second = commit(store, shop, outcome)  # GC ran concurrently: chunks re-checked, all there
    assert second.extra["chunks"]["refreshed"] > 0
    assert verify_manifest_objects(store, second) == []
    restore_to(store, second, tmp_path / "out.db", tmp_path / "r")
    assert dump_rows(tmp_path / "out.db") == dump_rows(shop)


def test_backup_refuses_to_commit_when_a_concurrent_gc_removed_its_chunks(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    """The worst interleaving: GC deletes a chunk after the backup decided to rely on it."""
    root = tmp_path / "store"
    keep = plain_backup(store, shop, tmp_path / "s0", name="other", params=SMALL)
    first = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    prune(store, first)
    outcome = stage(store, shop, tmp_path / "s2", SMALL)  # reuses the young chunks of 'other'
    prune(store, keep)
    age_chunks(root, 30)
    plan = chunkgc.plan_garbage(store)
    chunkgc.delete_garbage(store, plan, recheck=False)  # deleted behind the backup's back
    with pytest.raises(IntegrityError, match="concurrent garbage collection removed"):
        commit(store, shop, outcome)
    assert list_backups(store) == []  # nothing committed, nothing claimed
    # Running the backup again re-uploads what is missing.
    again = plain_backup(store, shop, tmp_path / "s3", params=SMALL)
    restore_to(store, again, tmp_path / "out.db", tmp_path / "r")
    assert dump_rows(tmp_path / "out.db") == dump_rows(shop)


def test_a_gc_still_running_makes_the_backup_wait_then_fail(
    shop: Path, store: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = inc.chunking_sink(store, tmp_path, params=SMALL)
    outcome = ops.stage_dump(SqliteConnector(shop), sink)
    chunkgc.plan_garbage(store)  # leaves a 'running' marker, never finishes
    monkeypatch.setattr(cs, "wait_seconds", lambda s: None)
    obj = outcome.objects[0]
    digests = getattr(obj, "digests", [])
    with pytest.raises(IntegrityError, match="still running"):
        chunkgc.check_concurrent_gc(store, getattr(obj, "first_decision", None), digests)


def test_manifest_versions_one_and_two_read_unknown_refused() -> None:
    base = (
        b'{"format_version": %d, "backup_id": "20260101T000000Z", "name": "a", '
        b'"engine": "sqlite", "source": "s", "started_at": "2026-01-01T00:00:00Z", '
        b'"finished_at": "2026-01-01T00:00:00Z"}'
    )
    assert parse_manifest(base % 1, "x").format_version == 1
    assert parse_manifest(base % 2, "x").format_version == 2
    with pytest.raises(ManifestError, match="upgrade"):
        parse_manifest(base % 3, "x")


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="mode"):
        inc.check_mode("differential")


def test_index_with_unknown_version_is_refused() -> None:
    index = cs.ChunkIndex("database", "sqlite3", {}, 0, "", [])
    data = index.to_bytes()
    assert cs.ChunkIndex.from_bytes(data, "k").part == "database"
    import json

    import zstandard

    doc = json.loads(zstandard.ZstdDecompressor().decompress(data))
    doc["version"] = 2
    with pytest.raises(ManifestError, match="version"):
        cs.ChunkIndex.from_bytes(zstandard.ZstdCompressor().compress(json.dumps(doc).encode()), "k")
    with pytest.raises(ManifestError):
        cs.ChunkIndex.from_bytes(b"not zstd", "k")


def test_export_and_gc_commands_in_process(shop: Path, store: LocalStorage, tmp_path: Path) -> None:
    """The commands themselves (no flow involved), run in this process."""
    import json

    from typer.testing import CliRunner

    from db_backup.cli import app

    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    runner = CliRunner()
    out = tmp_path / "dump.sqlite3"
    st = str(tmp_path / "store")
    res = runner.invoke(
        app, ["export", "latest", "--name", "shop", "--to", str(out), "--storage", st]
    )
    assert res.exit_code == 0, res.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == m.objects[0].raw_sha256
    res = runner.invoke(
        app, ["export", "latest", "--name", "shop", "--to", str(out), "--storage", st]
    )
    assert res.exit_code == 4 and "exists" in res.output
    res = runner.invoke(
        app, ["export", "latest", "--name", "nope", "--to", str(out), "--storage", st]
    )
    assert res.exit_code == 6
    prune(store, m)
    age_chunks(tmp_path / "store", 30)
    res = runner.invoke(app, ["gc", "--storage", st, "--dry-run"])
    assert res.exit_code == 0 and "would delete" in res.output
    res = runner.invoke(app, ["gc", "--storage", st, "--grace", "10d", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["deleted_chunks"] > 0
    assert not chunk_files(tmp_path / "store")
    res = runner.invoke(app, ["gc", "--storage", st, "--grace", "soon"])
    assert res.exit_code == 2 and "duration" in res.output


def test_multi_part_export_writes_one_file_per_part(
    shop: Path, store: LocalStorage, tmp_path: Path
) -> None:
    m = plain_backup(store, shop, tmp_path / "s1", params=SMALL)
    first = m.objects[0]
    second_key = first.key.replace(".chunks", "-2.chunks")
    store.put_bytes(second_key, store.get_bytes(first.key))  # a second part, same content
    second = first.model_copy(update={"part": "copy", "key": second_key})
    two = m.model_copy(update={"objects": [first, second]})
    files = export_backup(store, two, tmp_path / "outdir")
    assert [f.name for f in files] == ["shop.sqlite3", "shop.sqlite3-2"]
    assert files[0].read_bytes() == files[1].read_bytes()
    assert dump_rows(files[0]) == dump_rows(shop)


def test_sink_stream_works_wrapped_like_any_raw_stream(store: LocalStorage, tmp_path: Path) -> None:
    """Connectors may wrap the stream (buffered, text); the stored dump is byte-exact."""
    import io

    sink = inc.chunking_sink(store, tmp_path, params=SMALL)
    lines = [f"INSERT INTO t VALUES ({i}, 'zoë {i}');\n" for i in range(40_000)]
    with sink.open("database", "dump.sql", "sql") as raw:
        text = io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8")  # type: ignore[arg-type]
        text.writelines(lines)
        text.flush()
        text.detach()
    obj = sink.objects[0]
    stored = ops.upload_staged(store, obj, "x/20260101T000000Z/dump.sql.chunks")
    staged = download_verified(store, stored, tmp_path)
    from db_backup.pipeline import open_decoded

    with open_decoded(staged, "x", stored.raw_size, stored.raw_sha256) as src:
        assert src.read() == "".join(lines).encode()
