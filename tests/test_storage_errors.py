"""Errors the storage adapters do not recognise are not transient (issue 13).

Guards: every adapter call used to end in ``except Exception: raise self._error(...)``
whose fallback turned *any* exception, a TypeError in our own code included, into a
transient StorageError that the I/O tasks retried three times (with 2 s, 8 s, 30 s
pauses). Now each adapter maps SDK errors in one context manager, and an exception
that is neither the SDK's nor the network's is raised once, as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from db_backup.errors import StorageError, is_transient
from db_backup.manifest import StoredObject
from db_backup.storage.cloud import TransferSettings


def s3_store_whose_sdk_raises(exc: BaseException, calls: list[str]) -> Any:
    """A real boto3 client (never connected) whose get_object raises ``exc``."""
    import boto3

    from db_backup.storage.s3 import S3Storage, sdk_config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=sdk_config(TransferSettings()),
    )

    def get_object(**kwargs: Any) -> Any:
        calls.append(kwargs["Key"])
        raise exc

    client.get_object = get_object
    return S3Storage(client, "bkt", "", TransferSettings())


def an_object() -> StoredObject:
    return StoredObject(
        key="shop/1/db.zst",
        part="database",
        format="sqlite3",
        size=1,
        sha256="0" * 64,
        raw_size=1,
        raw_sha256="0" * 64,
    )


def test_unknown_exception_in_an_adapter_fails_the_download_task_once(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download task (real retry policy: 3 retries on transient errors) runs once."""
    from db_backup.tasks import restore as restore_tasks

    calls: list[str] = []
    store = s3_store_whose_sdk_raises(TypeError("bad operand type for unary -: 'str'"), calls)
    monkeypatch.setattr(restore_tasks, "resolve_storage", lambda _name: store)
    with pytest.raises(TypeError, match="bad operand type"):
        restore_tasks.download_object("s3://bkt", an_object(), str(tmp_path))
    assert calls == ["shop/1/db.zst"]  # raised once, not retried


def test_sdk_errors_are_still_mapped_and_transient_ones_retried(tmp_path: Path) -> None:
    """The same path still turns a dropped connection into a transient StorageError."""
    from botocore.exceptions import EndpointConnectionError

    calls: list[str] = []
    store = s3_store_whose_sdk_raises(EndpointConnectionError(endpoint_url="http://x"), calls)
    with pytest.raises(StorageError) as err:
        store.get_bytes("shop/1/db.zst")
    assert is_transient(err.value) and "s3://bkt/shop/1/db.zst" in str(err.value)


@pytest.mark.parametrize("engine", ["s3", "gcs", "azure"])
def test_every_adapter_leaves_unknown_exceptions_alone(engine: str) -> None:
    """Each adapter's SDK-error mapper recognises no TypeError/KeyError of ours."""
    from db_backup.storage.azure import map_azure_error
    from db_backup.storage.gcs import map_gcs_error
    from db_backup.storage.s3 import map_s3_error

    mapper = {"s3": map_s3_error, "gcs": map_gcs_error, "azure": map_azure_error}[engine]
    for exc in (TypeError("x"), KeyError("UploadId"), AttributeError("y")):
        assert mapper(exc, "bkt", "where") is None
        assert not is_transient(exc)
    assert mapper(ConnectionResetError("reset"), "bkt", "where").transient  # type: ignore[union-attr]
