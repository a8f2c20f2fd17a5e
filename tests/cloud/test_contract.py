"""One contract, every adapter: local directory, S3 (moto), GCS (emulator), Azure (Azurite)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from db_backup.catalog import list_backups
from db_backup.errors import ObjectNotFound, PermanentStorageError
from db_backup.storage import LocalStorage
from db_backup.storage.cloud import MiB
from tests.cloud.conftest import TEST_SETTINGS, open_store, write_random

KINDS = ["local", "s3", "gcs", "azure"]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, cloud: Any) -> Any:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    svc, bucket = cloud(request.param)
    return open_store(request.param, svc.endpoint, bucket, "team/backups")


def test_put_get_bytes_round_trip(store: Any) -> None:
    store.put_bytes("shop/20260101T000000Z/manifest.json", b'{"a": 1}\n')
    assert store.get_bytes("shop/20260101T000000Z/manifest.json") == b'{"a": 1}\n'
    assert store.exists("shop/20260101T000000Z/manifest.json")
    assert not store.exists("shop/20260101T000000Z/other.json")


def test_missing_key_is_object_not_found(store: Any, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="nothing/here"):
        store.get_bytes("nothing/here")
    with pytest.raises(ObjectNotFound):
        store.get_file("nothing/here", tmp_path / "x")
    with pytest.raises(ObjectNotFound), store.open_read("nothing/here") as fh:
        fh.read()


def test_list_shows_sizes_times_and_only_the_prefix(store: Any) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    store.put_bytes("a/1/x", b"12345")
    store.put_bytes("a/2/y", b"1")
    store.put_bytes("ab/3/z", b"1234")
    got = {i.key: i for i in store.list("a/")}
    assert sorted(got) == ["a/1/x", "a/2/y"]
    assert got["a/1/x"].size == 5
    modified = got["a/1/x"].modified
    assert modified is not None and modified.astimezone(UTC) > before
    assert sorted(i.key for i in store.list("a")) == ["a/1/x", "a/2/y", "ab/3/z"]
    assert list(store.list("zzz/")) == []


def test_overwrite_replaces_whole_object(store: Any, tmp_path: Path) -> None:
    store.put_bytes("k/obj", b"first version, longer")
    src = tmp_path / "second"
    src.write_bytes(b"second")
    store.put_file("k/obj", src)
    assert store.get_bytes("k/obj") == b"second"
    assert [i.size for i in store.list("k/")] == [6]


def test_delete_is_idempotent(store: Any) -> None:
    store.put_bytes("d/1", b"x")
    store.delete("d/1")
    store.delete("d/1")
    assert not store.exists("d/1")
    assert list(store.list("d/")) == []


def test_invalid_keys_are_refused(store: Any) -> None:
    for bad in ("", "a/../b"):
        with pytest.raises(PermanentStorageError):
            store.put_bytes(bad, b"x")


def test_large_object_round_trip_keeps_sha256(store: Any, tmp_path: Path) -> None:
    """24 MiB with 5 MiB parts: multipart (S3), resumable chunks (GCS), blocks (Azure)."""
    src = write_random(tmp_path / "big.zst", 24 * MiB + 12345)
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    receipt = store.put_file("shop/20260101T000000Z/big.zst", src)
    if receipt is not None:  # cloud adapters report the bytes they sent and what was checked
        assert (receipt.size, receipt.sha256) == (src.stat().st_size, want)
        assert receipt.verified.split(":")[0] in ("s3", "gcs", "azure")
    [info] = list(store.list("shop/"))
    assert info.size == src.stat().st_size
    dest = tmp_path / "back.zst"
    store.get_file("shop/20260101T000000Z/big.zst", dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == want
    with store.open_read("shop/20260101T000000Z/big.zst") as fh:
        streamed = hashlib.sha256()
        while block := fh.read(MiB):
            streamed.update(block)
    assert streamed.hexdigest() == want


def test_listing_many_backups_reads_manifests_only(store: Any) -> None:
    """1030 objects (more than one 1000-key page) of 40 backups; orphans are not backups."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.cloud.manifests import fake_manifest

    writes: list[tuple[str, bytes]] = []
    for i in range(40):
        bid = f"202601{1 + i // 24:02d}T{i % 24:02d}0000Z"
        writes += [(f"shop/{bid}/part{j:02d}.zst", b"x") for j in range(25)]
        if i % 10 != 9:  # every tenth backup was interrupted: data, no manifest
            writes.append((f"shop/{bid}/manifest.json", fake_manifest("shop", bid)))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: store.put_bytes(*kv), writes))
    assert sum(1 for _ in store.list("shop/")) == 40 * 25 + 36
    backups = list_backups(store, "shop")
    assert len(backups) == 36
    assert "20260101T090000Z" not in {b.backup_id for b in backups}
    assert [b.backup_id for b in backups] == sorted(b.backup_id for b in backups)


def test_multipart_settings_are_small_in_tests() -> None:
    assert TEST_SETTINGS.part_size == 5 * MiB
