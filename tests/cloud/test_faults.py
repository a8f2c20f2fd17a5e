"""Real network faults between each adapter and its emulator (tests/faultproxy.py):
503s, connections reset mid-transfer, stalled responses. Transfers that can
recover complete with the right sha256; those that cannot fail as transient
StorageErrors and leave no partial object behind."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backup.errors import StorageError
from db_backup.storage.cloud import MiB
from tests.cloud.conftest import TEST_SETTINGS, open_store, write_random
from tests.faultproxy import FaultProxy


def incomplete_uploads(store: Any, prefix: str) -> list[str]:
    """Keys of S3 multipart uploads under ``prefix`` never completed nor aborted."""
    paginator = store.client.get_paginator("list_multipart_uploads")
    pages = paginator.paginate(Bucket=store.bucket, Prefix=store.list_prefix(prefix))
    return [up["Key"] for page in pages for up in page.get("Uploads", [])]


KINDS = ["s3", "gcs", "azure"]
# The write request of each store's upload protocol (S3 parts, GCS chunks, Azure blocks).
UPLOAD_METHOD = {"s3": "PUT", "gcs": "PUT", "azure": "PUT"}
# How an upload request is cut mid-transfer. gcp-storage-emulator is a single-threaded
# HTTPServer that never recovers from a request body reset half-way (every later request
# hangs), so for GCS the chunk arrives and its response is cut instead: the client cannot
# know whether the chunk was stored and must resume from the store's answer.
MID_UPLOAD = {"s3": "reset", "gcs": "cut", "azure": "reset"}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxied(kind: str, cloud: Any) -> Iterator[tuple[FaultProxy, Any, Any]]:
    """(proxy, store through the proxy, store direct to the emulator) on a fresh bucket."""
    svc, bucket = cloud(kind)
    with FaultProxy(svc.port, stall_seconds=5) as proxy:
        yield (
            proxy,
            open_store(kind, proxy.endpoint, bucket, "p"),
            open_store(kind, svc.endpoint, bucket, "p"),
        )


@pytest.fixture
def impatient(kind: str, proxied: tuple[FaultProxy, Any, Any]) -> Any:
    """The proxied store with one SDK attempt: endless faults fail fast."""
    from dataclasses import replace

    proxy, store, _ = proxied
    settings = replace(TEST_SETTINGS, sdk_retries=1, timeout=2)
    return open_store(kind, proxy.endpoint, store.bucket, "p", settings)


def big_file(tmp_path: Path) -> tuple[Path, str]:
    src = write_random(tmp_path / "big.zst", 12 * MiB + 777, seed=7)
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_upload_survives_503_and_reset_mid_body(
    kind: str, proxied: tuple[FaultProxy, Any, Any], tmp_path: Path
) -> None:
    proxy, store, direct = proxied
    if kind == "gcs":  # resumable: the first request opens the session (POST)
        proxy.add("503", times=1, method="POST")
    else:
        proxy.add("503", times=1, method="PUT")
    proxy.add(MID_UPLOAD[kind], times=1, method=UPLOAD_METHOD[kind])
    src, want = big_file(tmp_path)
    receipt = store.put_file("b/1/big.zst", src)
    assert receipt.sha256 == want
    assert any(i.startswith("503") for i in proxy.injected)
    assert any(i.startswith(MID_UPLOAD[kind]) for i in proxy.injected)
    dest = tmp_path / "back"
    direct.get_file("b/1/big.zst", dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == want


def test_download_survives_a_reset_mid_response(
    kind: str, proxied: tuple[FaultProxy, Any, Any], tmp_path: Path
) -> None:
    proxy, store, direct = proxied
    src, want = big_file(tmp_path)
    direct.put_file("b/1/big.zst", src)
    data_path = {"s3": "/big.zst", "gcs": "alt=media", "azure": "/big.zst"}[kind]
    proxy.add("cut", times=1, method="GET", path_contains=data_path)
    dest = tmp_path / "back"
    try:
        store.get_file("b/1/big.zst", dest)
    except StorageError as exc:  # not absorbed by the SDK: must be retryable by the task
        assert exc.transient, exc
        if kind == "gcs":
            # gcp-storage-emulator (single-threaded) answers the SDK's resumed ranged GETs
            # with bytes that fail the crc32c check (DataCorruption) or resets them for a
            # while: the adapter must fail transiently, never hand back wrong bytes.
            assert "big.zst" in str(exc)
            return
        for _attempt in range(3):  # what the download task's retries do
            try:
                store.get_file("b/1/big.zst", dest)
                break
            except StorageError as again:  # a pooled connection the cut left half-dead
                assert again.transient, again
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == want
    assert any(i.startswith("cut GET") for i in proxy.injected)


def test_endless_upload_faults_fail_transient_and_leave_nothing(
    kind: str, proxied: tuple[FaultProxy, Any, Any], impatient: Any, tmp_path: Path
) -> None:
    proxy, _, direct = proxied
    store = impatient
    src, _ = big_file(tmp_path)
    direct.put_file("b/0/older.zst", src)  # an earlier backup's object must survive
    proxy.add(MID_UPLOAD[kind], times=None, method=UPLOAD_METHOD[kind])
    proxy.add("503", times=None, method="POST")
    with pytest.raises(StorageError) as err:
        store.put_file("b/1/big.zst", src)
    assert err.value.transient
    assert "b/1/big.zst" in str(err.value)
    assert [i.key for i in direct.list("b/")] == ["b/0/older.zst"]
    if kind == "s3":  # the multipart upload was aborted, not left to accumulate parts
        assert incomplete_uploads(direct, "b/") == []


def test_stalled_download_times_out_as_transient(
    proxied: tuple[FaultProxy, Any, Any], impatient: Any, tmp_path: Path
) -> None:
    proxy, _, direct = proxied
    store = impatient
    direct.put_bytes("b/1/small", b"x" * 1000)
    proxy.add("stall", times=None, method="GET")
    with pytest.raises(StorageError) as err:
        store.get_file("b/1/small", tmp_path / "x")
    assert err.value.transient
