"""The round trip against a real ``mongod`` (testcontainers ``mongo`` image).

It carries what nx-27017 cannot hold: Decimal128, Timestamp, Regex,
MinKey/MaxKey, deprecated types, a 16 MiB document, descending/sparse/partial
indexes, capped and validator options, views, and real authentication. Marked
``docker``: scripts/test.sh deselects it, and says so, where no Docker daemon
runs; with a daemon any error is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from db_backup.connectors.base import RestoreRequest, RestoreSource
from db_backup.connectors.mongodb.logical import MongoConnector
from db_backup.errors import SourceError
from db_backup.manifest import Manifest, StoredObject
from db_backup.pipeline import DumpSink
from tests.mongo_helpers import RAW, every_type_documents, near_limit_document

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def mongod(docker_daemon: None) -> Iterator[tuple[str, str, str]]:
    """(host:port, user, password) of a throwaway mongod (a container)."""
    from testcontainers.community.mongodb import MongoDbContainer

    container = MongoDbContainer("mongo:7.0", username="root", password="rootpw")
    container.start()
    try:
        netloc = urlsplit(container.get_connection_url()).netloc.rpartition("@")[2]
        yield netloc, "root", "rootpw"
    finally:
        container.stop()


def _source(result: Any, sink: DumpSink) -> RestoreSource:
    staged = sink.objects[0]
    obj = StoredObject(key=staged.filename, **_figures(staged))
    now = datetime.now(UTC)
    manifest = Manifest(
        backup_id="20260101T000000Z",
        name="exotic",
        engine="mongodb",
        source="x",
        started_at=now,
        finished_at=now,
        objects=[obj],
        tables=result.tables,
        extra=result.extra,
    )
    return RestoreSource(manifest=manifest, staged={obj.key: staged.path})


def _figures(staged: Any) -> dict[str, Any]:
    keys = ("part", "format", "size", "sha256", "raw_size", "raw_sha256")
    return {k: getattr(staged, k) for k in keys}


def test_real_mongod_round_trip_of_every_type(
    mongod: tuple[str, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pymongo
    from bson.raw_bson import RawBSONDocument

    hostport, user, password = mongod
    client: Any = pymongo.MongoClient(f"mongodb://{user}:{password}@{hostport}/?authSource=admin")
    db = client.exotic
    docs = [*every_type_documents(), near_limit_document(16 * 1024 * 1024 - 1024)]
    db.create_collection("things", validator={"$jsonSchema": {"bsonType": "object"}})
    db.things.insert_many([RawBSONDocument(d) for d in docs])
    db.things.create_index([("double", -1)], sparse=True, name="double_desc")
    db.things.create_index("int32", partialFilterExpression={"bool": {"$exists": True}})
    db.create_collection("log", capped=True, size=65536)
    db.log.insert_one({"_id": 1})
    db.command("create", "big_things", viewOn="things", pipeline=[{"$match": {"_id": "big"}}])

    monkeypatch.setenv("DB_BACKUP_MONGO_PASSWORD", password)
    source_conn = MongoConnector(f"mongodb://{user}@{hostport}/exotic?authSource=admin")
    sink = DumpSink(tmp_path)
    result = source_conn.dump(sink)
    assert result.tables == {"things": len(docs), "log": 1}
    assert result.extra["views"] == ["big_things"]

    target = MongoConnector(f"mongodb://{user}@{hostport}/exotic_copy?authSource=admin")
    target.restore(_source(result, sink), RestoreRequest())
    copy = client.exotic_copy
    restored = [d.raw for d in copy.get_collection("things", codec_options=RAW).find()]
    assert sorted(restored) == sorted(docs)
    info = {c["name"]: c for c in copy.list_collections()}
    assert info["log"]["options"]["capped"] is True
    assert "validator" in info["things"]["options"]
    assert info["big_things"]["type"] == "view"
    indexes = {ix["name"]: ix for ix in copy.things.list_indexes()}
    assert (
        dict(indexes["double_desc"]["key"]) == {"double": -1} and indexes["double_desc"]["sparse"]
    )
    assert "partialFilterExpression" in indexes["int32_1"]
    client.drop_database("exotic")
    client.drop_database("exotic_copy")


def test_real_mongod_bad_credentials(mongod: tuple[str, str, str], tmp_path: Path) -> None:
    hostport, user, _ = mongod
    conn = MongoConnector(f"mongodb://{user}:wrong-pw@{hostport}/admin?authSource=admin")
    with pytest.raises(SourceError, match="authentication failed") as info:
        conn.dump(DumpSink(tmp_path))
    assert "wrong-pw" not in str(info.value)
    assert not list(tmp_path.iterdir())
