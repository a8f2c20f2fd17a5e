"""BSON-level tests without a server: framing, metadata, tar, compression, checksum.

Every BSON type nx-27017 cannot hold passes here through the exact functions
the MongoDB connector uses on the way out (write_raw_batches, ArchiveWriter in
a DumpSink) and on the way back (open_decoded, scan_archive, iter_members,
iter_documents, batched/insert_documents).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Binary, Int64
from bson.raw_bson import RawBSONDocument

from db_backup.connectors.base import RestoreSource
from db_backup.connectors.mongodb.archive import (
    BSON_SUFFIX,
    METADATA_SUFFIX,
    ArchiveWriter,
    collection_metadata,
    count_documents,
    drain,
    escape_collection,
    iter_documents,
    iter_members,
    member_name,
    parse_metadata,
    scan_archive,
    write_raw_batches,
)
from db_backup.connectors.mongodb.logical import map_error
from db_backup.connectors.mongodb.restore import batched, insert_documents, select_collections
from db_backup.errors import ConfigError, IntegrityError, SourceError, TargetError
from db_backup.manifest import Manifest, StoredObject
from db_backup.pipeline import DumpSink
from tests.conftest import need_service
from tests.mongo_helpers import every_type_documents, near_limit_document

UUID4 = Binary(bytes.fromhex("00112233445566778899aabbccddeeff"), 4)


def _metadata(name: str) -> bytes:
    info = {"name": name, "type": "collection", "options": {}, "info": {"uuid": UUID4}}
    indexes = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
    return collection_metadata(info, indexes)


def _stage_archive(tmp_path: Path, collections: dict[str, bytes], db: str = "shop") -> DumpSink:
    """Write collections through the connector's dump path into a DumpSink."""
    sink = DumpSink(tmp_path / "staging")
    sink.staging.mkdir(exist_ok=True)
    with sink.open("database", f"{db}.tar", "mongodump-tar") as out, ArchiveWriter(out) as tar:
        tar.add_directory(db)
        for name, data in collections.items():
            staged = tmp_path / f"{escape_collection(name)}.staged"
            with open(staged, "wb") as fh:
                docs = list(iter_documents(_bytes_stream(data), name, len(data)))
                batches = [b"".join(docs[i : i + 2]) for i in range(0, len(docs), 2)]
                write_raw_batches(batches, fh, name)
            tar.add_bytes(member_name(db, name, METADATA_SUFFIX), _metadata(name))
            tar.add_file(member_name(db, name, BSON_SUFFIX), staged)
    return sink


def _bytes_stream(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def _source(sink: DumpSink, tables: dict[str, int]) -> RestoreSource:
    staged = sink.objects[0]
    obj = StoredObject(
        key=f"shop/20260101T000000Z/{staged.filename}",
        part=staged.part,
        format=staged.format,
        size=staged.size,
        sha256=staged.sha256,
        raw_size=staged.raw_size,
        raw_sha256=staged.raw_sha256,
    )
    now = datetime.now(UTC)
    manifest = Manifest(
        backup_id="20260101T000000Z",
        name="shop",
        engine="mongodb",
        source="mongodb://127.0.0.1/shop",
        started_at=now,
        finished_at=now,
        objects=[obj],
        tables=tables,
    )
    return RestoreSource(manifest=manifest, staged={obj.key: staged.path})


def _restored_bytes(source: RestoreSource) -> dict[str, bytes]:
    """Read the archive back the way restore does; every document framed and counted."""
    obj = source.part("database")
    out: dict[str, bytes] = {}
    with source.open(obj) as stream:
        for member in iter_members(stream, obj.key):
            if member.suffix == BSON_SUFFIX:
                docs = iter_documents(member.stream, member.what, member.info.size)
                out[member.stem] = b"".join(docs)
        drain(stream)
    return out


def test_every_bson_type_survives_dump_and_restore_byte_for_byte(tmp_path: Path) -> None:
    docs = every_type_documents()
    data = b"".join(docs)
    sink = _stage_archive(tmp_path, {"exotic": data})
    source = _source(sink, {"exotic": len(docs)})

    assert _restored_bytes(source) == {"exotic": data}
    with source.open(source.part("database")) as stream:
        index = scan_archive(stream, "archive")
        drain(stream)
    entry = index.collections["exotic"]
    assert (index.database, entry.documents, entry.size) == ("shop", len(docs), len(data))
    # insert_many receives RawBSONDocuments whose bytes are the stored bytes.
    sink_coll = RecordingCollection()
    with source.open(source.part("database")) as stream:
        for member in iter_members(stream, "archive"):
            if member.suffix == BSON_SUFFIX:
                insert_documents(sink_coll, iter_documents(member.stream, "m", member.info.size))
        drain(stream)
    assert [d.raw for batch in sink_coll.batches for d in batch] == docs


def test_document_of_16_mib_passes_through(tmp_path: Path) -> None:
    big = near_limit_document()
    small = bson.encode({"_id": 1, "x": Int64(5)})
    data = small + big + small
    sink = _stage_archive(tmp_path, {"big": data})
    assert sink.objects[0].raw_size > len(data)
    assert _restored_bytes(_source(sink, {"big": 3})) == {"big": data}


def test_gnu_tar_and_zstd_unpack_mongodump_layout(tmp_path: Path) -> None:
    """What `zstd -d` + `tar x` give mongorestore --dir: the same bytes, mongodump's JSON."""
    need_service(bool(shutil.which("zstd") and shutil.which("tar")), "zstd and tar")
    docs = every_type_documents()
    sink = _stage_archive(tmp_path, {"exotic": b"".join(docs), "a/b c": docs[0]})
    out = tmp_path / "dump"
    out.mkdir()
    tar_path = tmp_path / "shop.tar"
    subprocess.run(["zstd", "-dq", str(sink.objects[0].path), "-o", str(tar_path)], check=True)
    subprocess.run(["tar", "-xf", str(tar_path), "-C", str(out)], check=True)
    assert sorted(p.name for p in (out / "shop").iterdir()) == [
        "a%2Fb+c.bson",
        "a%2Fb+c.metadata.json",
        "exotic.bson",
        "exotic.metadata.json",
    ]
    assert (out / "shop" / "exotic.bson").read_bytes() == b"".join(docs)
    meta = json.loads((out / "shop" / "a%2Fb+c.metadata.json").read_text())
    assert list(meta) == ["indexes", "uuid", "collectionName", "type"]
    assert meta["collectionName"] == "a/b c"


def test_metadata_json_is_mongodumps_canonical_format() -> None:
    info = {
        "name": "events",
        "type": "collection",
        "options": {"capped": True, "size": Int64(4096)},
        "info": {"readOnly": False, "uuid": UUID4},
    }
    indexes = [
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {"v": 2, "key": {"at": -1, "kind": 1}, "name": "at_-1_kind_1", "sparse": True},
    ]
    assert collection_metadata(info, indexes).decode() == (
        '{"options":{"capped":true,"size":{"$numberLong":"4096"}},'
        '"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},'
        '{"v":{"$numberInt":"2"},"key":{"at":{"$numberInt":"-1"},"kind":{"$numberInt":"1"}},'
        '"name":"at_-1_kind_1","sparse":true}],'
        '"uuid":"00112233445566778899aabbccddeeff","collectionName":"events","type":"collection"}'
    )
    parsed = parse_metadata(collection_metadata(info, indexes), "m")
    assert parsed["options"]["size"] == 4096 and isinstance(parsed["options"]["size"], Int64)
    assert list(parsed["indexes"][1]["key"].items()) == [("at", -1), ("kind", 1)]


def test_metadata_without_uuid_or_options_omits_them() -> None:
    info = {"name": "é", "type": "collection", "options": {}, "info": {"uuid": "not-binary"}}
    assert collection_metadata(info, []).decode() == (
        '{"indexes":[],"collectionName":"é","type":"collection"}'
    )


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("orders", "orders"),
        ("a/b", "a%2Fb"),
        ("with space", "with+space"),
        ("a+b", "a%2Bb"),
        ("x$y:z@w", "x%24y%3Az%40w"),
        ("keep-_.~", "keep-_.~"),
        ("é", "%C3%A9"),
        ("100%", "100%25"),
    ],
)
def test_collection_names_are_escaped_like_mongodump(name: str, stem: str) -> None:
    """Guards: file names are Go's url.QueryEscape, which mongorestore unescapes
    (a space is ``+``, a ``+`` is ``%2B``); tests/test_mongo_real_tools.py checks
    the same against mongodump and mongorestore themselves."""
    assert escape_collection(name) == stem


def test_long_collection_names_are_truncated_with_a_hash() -> None:
    stem = escape_collection("n" * 300)
    assert len(stem) == 238 and stem.startswith("n" * 208 + "%24")
    assert escape_collection("n" * 300) != escape_collection("n" * 299 + "m")


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d: d[:-10], "is truncated: document 2 at byte"),
        (lambda d: d + b"\x01\x00", "stray byte"),
        (lambda d: b"\x02\x00\x00\x00" + d, "impossible length of 2 bytes"),
        (lambda d: d[:-1] + b"\x07", "does not end with a NUL byte"),
    ],
)
def test_broken_framing_is_named(cut: Any, message: str) -> None:
    docs = [bson.encode({"_id": i, "pad": "x" * 40}) for i in range(3)]
    data = cut(b"".join(docs))
    with pytest.raises(IntegrityError, match=message):
        list(iter_documents(_bytes_stream(data), "shop/orders.bson", len(data)))
    with pytest.raises(IntegrityError, match=message.split(":")[0]):
        count_documents(data, "shop.orders")


def test_truncated_bson_inside_a_checksummed_archive_is_detected(tmp_path: Path) -> None:
    """The archive's digest is right, but one .bson was written short: scan names it."""
    docs = [bson.encode({"_id": i, "pad": "x" * 100}) for i in range(50)]
    whole = b"".join(docs)
    sink = DumpSink(tmp_path)
    staged = tmp_path / "orders.staged"
    staged.write_bytes(whole[:-30])
    with sink.open("database", "shop.tar", "mongodump-tar") as out, ArchiveWriter(out) as tar:
        tar.add_bytes(member_name("shop", "orders", METADATA_SUFFIX), _metadata("orders"))
        tar.add_file(member_name("shop", "orders", BSON_SUFFIX), staged)
    source = _source(sink, {"orders": 50})
    with (
        pytest.raises(IntegrityError, match=r"shop/orders\.bson is truncated: document 49"),
        source.open(source.part("database")) as stream,
    ):
        scan_archive(stream, "archive")


def test_write_raw_batches_refuses_a_partial_batch(tmp_path: Path) -> None:
    doc = bson.encode({"_id": 1})
    with open(tmp_path / "x", "wb") as fh, pytest.raises(IntegrityError, match="shop.orders"):
        write_raw_batches([doc, doc[:-2]], fh, "shop.orders")


def test_archive_with_foreign_members_is_refused(tmp_path: Path) -> None:
    sink = DumpSink(tmp_path)
    with sink.open("database", "shop.tar", "mongodump-tar") as out, ArchiveWriter(out) as tar:
        tar.add_bytes("shop/notes.txt", b"hello")
    source = _source(sink, {})
    with (
        pytest.raises(IntegrityError, match="unexpected member 'shop/notes.txt'"),
        source.open(source.part("database")) as stream,
    ):
        scan_archive(stream, "archive")


def test_batches_respect_byte_and_count_limits() -> None:
    docs = [b"x" * n for n in (10, 10, 10, 25, 1, 1, 1)]
    assert [len(b) for b in batched(docs, max_bytes=30, max_docs=10)] == [3, 4]
    assert [len(b) for b in batched(docs, max_bytes=1000, max_docs=2)] == [2, 2, 2, 1]
    assert list(batched([], 10, 10)) == []


def test_select_collections_names_what_the_backup_lacks() -> None:
    now = datetime.now(UTC)
    manifest = Manifest(
        backup_id="20260101T000000Z",
        name="shop",
        engine="mongodb",
        source="mongodb://h/shop",
        started_at=now,
        finished_at=now,
        tables={"orders": 3, "people": 1},
        extra={"views": ["big_orders"]},
    )
    assert select_collections(manifest, None) == ["big_orders", "orders", "people"]
    assert select_collections(manifest, ["people", "people"]) == ["people"]
    with pytest.raises(ConfigError, match="collection.s. ghosts not in backup shop/2026"):
        select_collections(manifest, ["orders", "ghosts"])


def test_pymongo_errors_map_to_one_line_errors() -> None:
    from pymongo import errors

    where = "mongodb://app@db.example:27017/shop"
    auth = map_error(errors.OperationFailure("Authentication failed.", code=18), where, SourceError)
    assert isinstance(auth, SourceError)
    assert str(auth) == f"authentication failed for MongoDB {where}: Authentication failed."
    denied = map_error(errors.OperationFailure("not authorized", code=13), where, TargetError)
    assert isinstance(denied, TargetError) and "not authorized on MongoDB" in str(denied)
    lost = map_error(errors.AutoReconnect("connection reset"), where, SourceError)
    assert lost.transient and "connection to MongoDB" in str(lost)
    old = map_error(errors.OperationFailure("too old", code=239), where, SourceError)
    assert "minSnapshotHistoryWindowInSeconds" in str(old)
    timeout = errors.ServerSelectionTimeoutError("h:1: refused, Timeout: 1s, Topology: ...")
    assert str(map_error(timeout, where, SourceError)).endswith("unreachable: h:1: refused")
    dup = errors.BulkWriteError({"writeErrors": [{"errmsg": "E11000 duplicate key"}]})
    assert "E11000 duplicate key" in str(map_error(dup, where, TargetError))


class RecordingCollection:
    """Stands in for a pymongo Collection where no server can hold these BSON types."""

    def __init__(self) -> None:
        self.batches: list[list[RawBSONDocument]] = []

    def insert_many(self, docs: list[RawBSONDocument], **kwargs: Any) -> None:
        assert kwargs == {"ordered": True, "bypass_document_validation": True}
        assert all(isinstance(d, RawBSONDocument) for d in docs)
        self.batches.append(docs)


@pytest.mark.parametrize(
    ("hello", "snapshot"),
    [
        ({"setName": "rs0", "maxWireVersion": 21}, True),
        ({"msg": "isdbgrid", "maxWireVersion": 17}, True),
        ({"setName": "rs0", "maxWireVersion": 9}, False),  # 4.4: no snapshot reads
        ({"isWritablePrimary": True, "maxWireVersion": 25}, False),  # standalone
    ],
)
def test_snapshot_reads_only_where_the_server_offers_them(
    hello: dict[str, Any], snapshot: bool
) -> None:
    from db_backup.connectors.mongodb.logical import _consistency, _snapshot_capable

    assert _snapshot_capable(hello) is snapshot
    assert _consistency(snapshot).startswith("snapshot" if snapshot else "per-collection")
