"""MongoDB backups and restores against a real wire-protocol server (nx-27017).

nx-27017 cannot hold Decimal128, Timestamp, Regex or MinKey/MaxKey and renames
indexes: those are covered at the BSON level in test_mongo_archive.py and by
the testcontainers ``mongo`` round trip where Docker exists.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from db_backup.catalog import list_backups
from db_backup.connectors import connector_from_url
from db_backup.connectors.base import RestoreRequest
from db_backup.connectors.mongodb.logical import MongoConnector
from db_backup.errors import ConfigError, SourceError, TargetError
from db_backup.pipeline import DumpSink
from db_backup.storage.local import LocalStorage
from tests.conftest import CliRunner, need_service
from tests.mongo_helpers import (
    assert_same_collection,
    free_port,
    load_shop,
    nx_executable,
    raw_documents,
    start_nx,
)


@pytest.fixture(scope="session")
def nx_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One nx-27017 server for the session, on a free loopback port."""
    need_service(nx_executable() is not None, "nx-27017 (pip install nx-27017)")
    proc, url = start_nx(tmp_path_factory.mktemp("nx"))
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def mongo(nx_url: str) -> Iterator[pymongo.MongoClient[Any]]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(nx_url)
    yield client
    client.close()


_counter = iter(range(10_000))


@pytest.fixture
def dbname(mongo: pymongo.MongoClient[Any]) -> Iterator[str]:
    """A fresh database name (dropped afterwards), plus its restore target ``<name>_r``."""
    name = f"shop{next(_counter)}"
    yield name
    for db in (name, f"{name}_r"):
        mongo.drop_database(db)


def _small_shop(mongo: pymongo.MongoClient[Any], name: str) -> None:
    load_shop(mongo[name], orders=300, customers=120, events=80)


def _backup_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- the connector, directly ---------------------------------------------------------
def test_connector_round_trip_and_manifest_facts(
    nx_url: str, mongo: pymongo.MongoClient[Any], dbname: str, tmp_path: Path
) -> None:
    _small_shop(mongo, dbname)
    conn = connector_from_url(f"{nx_url}/{dbname}")
    sink = DumpSink(tmp_path)
    result = conn.dump(sink)
    assert result.tables == {"customers": 120, "events": 80, "orders": 300}
    assert result.server_version and result.consistency.startswith("per-collection")
    sizes = result.extra["collections"]
    assert sizes["orders"]["bytes"] == sum(len(d) for d in raw_documents(mongo[dbname], "orders"))
    assert sizes["customers"]["indexes"] == 2
    assert [o.format for o in sink.objects] == ["mongodump-tar"]
    assert not list(tmp_path.glob("*.bson")), "staged collections must be removed"
    assert conn.row_counts() == result.tables
    assert conn.check() == []


def test_dump_of_chosen_collections_via_url_query(
    nx_url: str, mongo: pymongo.MongoClient[Any], dbname: str, tmp_path: Path
) -> None:
    _small_shop(mongo, dbname)
    conn = connector_from_url(f"{nx_url}/{dbname}?collections=orders,events")
    assert conn.describe() == f"{nx_url}/{dbname}"
    assert set(conn.dump(DumpSink(tmp_path)).tables) == {"orders", "events"}
    missing = connector_from_url(f"{nx_url}/{dbname}?collections=orders,ghosts")
    failed = tmp_path / "failed"
    failed.mkdir()
    with pytest.raises(SourceError, match="collection.s. ghosts not in database"):
        missing.dump(DumpSink(failed))
    assert not list(failed.iterdir())


def test_unknown_database_and_closed_port_are_source_errors(nx_url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="database 'nosuchdb' does not exist"):
        connector_from_url(f"{nx_url}/nosuchdb").dump(DumpSink(tmp_path))
    closed = f"mongodb://app:s3cret@127.0.0.1:{free_port()}/shop?serverSelectionTimeoutMS=300"
    with pytest.raises(SourceError, match="unreachable") as info:
        connector_from_url(closed).ping()
    assert "s3cret" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_password_comes_from_env_and_is_never_described(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_BACKUP_MONGO_PASSWORD", "from-env")
    conn = MongoConnector("mongodb://app:in-url@127.0.0.1:1/shop?tls=false")
    assert conn.describe() == "mongodb://app@127.0.0.1:1/shop"
    assert conn._password == "from-env"
    with pytest.raises(ConfigError, match="must name one database"):
        MongoConnector("mongodb://127.0.0.1:1/")


def test_block_builds_a_connector_without_exposing_the_password() -> None:
    from pydantic import SecretStr

    from db_backup.blocks.databases import MongoDatabase

    block = MongoDatabase(
        host="127.0.0.1", port=1, database="shop", username="app", password=SecretStr("pw")
    )
    conn = block.connector()
    assert conn.describe() == "mongodb://app@127.0.0.1:1/shop"
    other = MongoDatabase(uri=SecretStr("mongodb://u:pw@127.0.0.1:1/shop")).connector(
        database="copy"
    )
    assert other.describe() == "mongodb://u@127.0.0.1:1/copy"
    with pytest.raises(ConfigError, match="needs a database"):
        MongoDatabase().connector()


def test_restore_refuses_occupied_target_before_writing(
    nx_url: str, mongo: pymongo.MongoClient[Any], dbname: str, tmp_path: Path
) -> None:
    _small_shop(mongo, dbname)
    target = connector_from_url(f"{nx_url}/{dbname}")
    from tests.test_mongo_archive import _source

    conn = connector_from_url(f"{nx_url}/{dbname}")
    sink = DumpSink(tmp_path)
    conn.dump(sink)
    source = _source(sink, {"customers": 120, "events": 80, "orders": 300})
    with pytest.raises(TargetError, match="already has documents in collection.s. customers"):
        target.check_target(source.manifest, RestoreRequest())
    with pytest.raises(TargetError, match="use --drop"):
        target.restore(source, RestoreRequest(tables=["orders"]))
    assert mongo[dbname].orders.count_documents({}) == 300
    # with drop, the same restore replaces the collection.
    mongo[dbname].orders.insert_one({"_id": "extra"})
    target.restore(source, RestoreRequest(tables=["orders"], options={"drop": True}))
    assert mongo[dbname].orders.count_documents({}) == 300


# -- through the flows ------------------------------------------------------------------
@pytest.mark.slow
def test_200k_documents_round_trip_through_flows_with_block(
    prefect_api: str, nx_url: str, mongo: pymongo.MongoClient[Any], dbname: str, tmp_path: Path
) -> None:
    """Must-show: several collections, indexes, 200k documents, compared one by one."""
    from db_backup.blocks.databases import MongoDatabase
    from db_backup.flows.backup import backup_database
    from db_backup.flows.restore import restore_database

    load_shop(mongo[dbname], orders=120_000, customers=50_000, events=30_000)
    MongoDatabase(uri=f"{nx_url}/{dbname}").save(dbname, overwrite=True)  # type: ignore[arg-type]
    store = str(tmp_path / "store")
    backup_id = backup_database(database=f"mongodb-database/{dbname}", storage=store)
    manifest = list_backups(LocalStorage(store), dbname)[-1]
    assert manifest.backup_id == backup_id and manifest.engine == "mongodb"
    assert manifest.tables == {"orders": 120_000, "customers": 50_000, "events": 30_000}
    assert manifest.extra["collections"]["orders"]["bytes"] > 0
    result = restore_database(name=dbname, target=f"{nx_url}/{dbname}_r", storage=store)
    assert result["tables"] == ["customers", "events", "orders"]
    total = sum(
        assert_same_collection(mongo[dbname], mongo[f"{dbname}_r"], name)
        for name in ("orders", "customers", "events")
    )
    assert total == 200_000


# -- through the CLI ----------------------------------------------------------------------
def test_cli_backup_and_selective_restore_into_another_database(
    cli: CliRunner, nx_url: str, mongo: pymongo.MongoClient[Any], dbname: str, tmp_path: Path
) -> None:
    _small_shop(mongo, dbname)
    store = str(tmp_path / "store")
    url = f"{nx_url}/{dbname}"
    backup_id = _backup_id(cli("backup", "--type", "mongodb", "--url", url, "--storage", store))
    listed = json.loads(cli("list", "--json", "--storage", store).stdout)
    assert listed[0]["engine"] == "mongodb" and listed[0]["tables"] == 3

    target = f"{nx_url}/{dbname}_r"
    args = ("restore", backup_id, "--name", dbname, "--to", target, "--storage", store)
    restored = cli(*args, "--collections", "orders")
    assert restored.returncode == 0, restored.stderr
    assert mongo[f"{dbname}_r"].list_collection_names() == ["orders"]
    assert_same_collection(mongo[dbname], mongo[f"{dbname}_r"], "orders")

    again = cli(*args, "--collections", "orders")
    _one_line_error(again, 4, "already has documents in collection(s) orders", "--drop")
    assert_same_collection(mongo[dbname], mongo[f"{dbname}_r"], "orders")  # untouched
    mongo[f"{dbname}_r"].orders.delete_many({"_id": {"$lt": 10}})
    dropped = cli(*args, "--collections", "orders,customers", "--drop")
    assert dropped.returncode == 0, dropped.stderr
    for name in ("orders", "customers"):
        assert_same_collection(mongo[dbname], mongo[f"{dbname}_r"], name)

    lacking = cli(*args, "--collections", "ghosts")
    _one_line_error(lacking, 2, "collection(s) ghosts not in backup")


def test_cli_bad_source_leaves_no_manifest(
    cli: CliRunner, nx_url: str, tmp_path: Path, mongo: pymongo.MongoClient[Any]
) -> None:
    store = tmp_path / "store"
    with_password = f"mongodb://app:s3cret@127.0.0.1:{free_port()}/shop"
    refused = cli("backup", "--type", "mongodb", "--url", with_password, "--storage", str(store))
    _one_line_error(refused, 2, "a password in the database URL", "DB_BACKUP_MONGO_PASSWORD")
    assert "s3cret" not in refused.stderr + refused.stdout
    closed = f"mongodb://app@127.0.0.1:{free_port()}/shop?serverSelectionTimeoutMS=300"
    down = cli(
        "backup",
        "--type",
        "mongodb",
        "--url",
        closed,
        "--storage",
        str(store),
        env={"DB_BACKUP_MONGO_PASSWORD": "s3cret"},
    )
    _one_line_error(down, 3, "unreachable", "mongodb://app@127.0.0.1")
    assert "s3cret" not in down.stderr + down.stdout
    unknown = cli(
        "backup", "--type", "mongodb", "--url", f"{nx_url}/nosuchdb", "--storage", str(store)
    )
    _one_line_error(unknown, 3, "database 'nosuchdb' does not exist")
    assert list_backups(LocalStorage(store)) == []


def test_cli_truncated_bson_is_named_and_nothing_is_restored(
    cli: CliRunner, nx_url: str, mongo: pymongo.MongoClient[Any], dbname: str, tmp_path: Path
) -> None:
    """A backup whose digests match but whose orders.bson was written short."""
    import bson

    from db_backup import operations as ops
    from db_backup.connectors.mongodb.archive import (
        BSON_SUFFIX,
        METADATA_SUFFIX,
        ArchiveWriter,
        member_name,
    )
    from tests.test_mongo_archive import _metadata, _source

    docs = b"".join(bson.encode({"_id": i, "pad": "x" * 50}) for i in range(40))
    staged = tmp_path / "orders.staged"
    staged.write_bytes(docs[:-25])
    whole = tmp_path / "people.staged"
    whole.write_bytes(docs)
    sink = DumpSink(tmp_path / "staging")
    sink.staging.mkdir()
    with sink.open("database", "shop.tar", "mongodump-tar") as out, ArchiveWriter(out) as tar:
        for name in ("people", "orders"):
            tar.add_bytes(member_name("shop", name, METADATA_SUFFIX), _metadata(name))
        tar.add_file(member_name("shop", "people", BSON_SUFFIX), whole)
        tar.add_file(member_name("shop", "orders", BSON_SUFFIX), staged)
    manifest = _source(sink, {"orders": 40, "people": 40}).manifest
    store = LocalStorage(tmp_path / "store")
    obj = manifest.objects[0]
    store.put_file(obj.key, sink.objects[0].path)
    ops.commit_manifest(store, manifest)

    target = f"{nx_url}/{dbname}_r"
    result = cli(
        "restore", "latest", "--name", "shop", "--to", target, "--storage", str(store.root)
    )
    _one_line_error(result, 8, "shop/orders.bson is truncated: document 39")
    assert mongo[f"{dbname}_r"].list_collection_names() == []
