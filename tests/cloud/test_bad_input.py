"""Bad input with nothing lost: unparseable URLs, unknown buckets, bad credentials,
objects missing or altered behind a manifest; plus the SDK error classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from db_backup.errors import (
    ConfigError,
    IntegrityError,
    ObjectNotFound,
    PermanentStorageError,
    StorageError,
)
from db_backup.storage import open_storage
from db_backup.storage.cloud import MiB, TransferSettings, parse_size
from tests.cloud.conftest import TEST_SETTINGS, env_for, open_store, url_for
from tests.sqlite_helpers import dump_rows, make_shop


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket/x",
        "gs://ab",
        "az://-x-/p",
        "s3://bucket/../etc",
        "gs://bucket//double",
        "ftp://host/path",
    ],
)
def test_unparseable_storage_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_storage(url)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "want"),
    [("", 7), ("8388608", 8388608), ("16MiB", 16 * MiB), ("64MB", 64_000_000), ("1g", 10**9)],
)
def test_parse_size(text: str, want: int) -> None:
    assert parse_size(text, 7) == want


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_BACKUP_PART_SIZE", "1MiB"),
        ("DB_BACKUP_PART_SIZE", "lots"),
        ("DB_BACKUP_UPLOAD_CONCURRENCY", "0"),
        ("DB_BACKUP_STORAGE_RETRIES", "x"),
    ],
)
def test_bad_transfer_settings_are_config_errors(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(
        ConfigError, match=name if "PART" not in name or value != "lots" else "lots"
    ):
        TransferSettings.from_env()


def test_url_form_reads_the_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("DB_BACKUP_PART_SIZE", "8MiB")
    store = open_storage("s3://some-bucket/a/b/")
    assert store.describe() == "s3://some-bucket/a/b"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert store.settings.part_size == 8 * MiB
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    assert open_storage("gs://some-bucket").describe() == "gs://some-bucket"
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_storage("az://some-container/x")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "not a connection string; secret=hunter2")
    with pytest.raises(ConfigError) as err:
        open_storage("az://some-container/x")
    assert "hunter2" not in str(err.value)


# -- SDK errors -> our tree ------------------------------------------------------------
def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchBucket", 404, PermanentStorageError),
        ("NoSuchKey", 404, ObjectNotFound),
        ("AccessDenied", 403, PermanentStorageError),
        ("InvalidAccessKeyId", 403, PermanentStorageError),
        ("SlowDown", 503, StorageError),
        ("InternalError", 500, StorageError),
        ("RequestTimeout", 400, StorageError),
        ("BadDigest", 400, StorageError),
        ("InvalidArgument", 400, PermanentStorageError),
    ],
)
def test_s3_errors_are_classified(code: str, status: int, kind: type) -> None:
    from db_backup.storage.s3 import map_s3_error

    err = map_s3_error(_client_error(code, status), "bkt", "s3://bkt/k")
    assert type(err) is kind
    assert err.transient == (kind is StorageError)
    assert "bkt" in str(err)


def test_s3_connection_and_credential_errors() -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ReadTimeoutError

    from db_backup.storage.s3 import map_s3_error

    assert map_s3_error(EndpointConnectionError(endpoint_url="http://x"), "b", "w").transient
    assert map_s3_error(ReadTimeoutError(endpoint_url="http://x"), "b", "w").transient
    assert not map_s3_error(NoCredentialsError(), "b", "w").transient


def test_gcs_errors_are_classified() -> None:
    from google.api_core import exceptions as gx
    from google.auth.exceptions import DefaultCredentialsError

    from db_backup.storage.gcs import map_gcs_error

    assert type(map_gcs_error(gx.NotFound("No such object: b/k"), "b", "w")) is ObjectNotFound
    assert map_gcs_error(gx.ServiceUnavailable("busy"), "b", "w").transient
    assert map_gcs_error(gx.TooManyRequests("slow down"), "b", "w").transient
    assert not map_gcs_error(gx.Forbidden("no"), "b", "w").transient
    assert not map_gcs_error(DefaultCredentialsError("none"), "b", "w").transient
    assert map_gcs_error(ConnectionResetError("reset"), "b", "w").transient


def test_azure_errors_are_classified() -> None:
    from azure.core import exceptions as ax

    from db_backup.storage.azure import map_azure_error

    def http(status: int, code: str) -> Exception:
        exc = ax.HttpResponseError(message="m")
        exc.status_code = status
        exc.error_code = code
        return exc

    assert "does not exist" in str(map_azure_error(http(404, "ContainerNotFound"), "c", "w"))
    assert type(map_azure_error(http(404, "BlobNotFound"), "c", "w")) is ObjectNotFound
    assert map_azure_error(http(503, "ServerBusy"), "c", "w").transient
    assert map_azure_error(http(400, "Md5Mismatch"), "c", "w").transient
    assert not map_azure_error(http(403, "AuthorizationFailure"), "c", "w").transient
    assert map_azure_error(ax.ServiceResponseError("reset"), "c", "w").transient


# -- against the emulators ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_unknown_bucket_is_permanent_and_named(kind: str, cloud: Any, tmp_path: Path) -> None:
    svc, _ = cloud(kind)
    store = open_store(kind, svc.endpoint, "no-such-bucket-here", "p")
    src = tmp_path / "f"
    src.write_bytes(b"data")
    with pytest.raises(PermanentStorageError, match="no-such-bucket-here.*does not exist"):
        store.put_file("a/b", src)
    with pytest.raises(PermanentStorageError, match="does not exist"):
        list(store.list(""))


def test_azure_bad_credentials_fail_at_once(azurite: Any) -> None:
    from db_backup.storage.azure import AzureBlobStorage, container_client
    from tests.cloud.services import azurite_connection_string

    good = azurite_connection_string(azurite.endpoint)
    bad = good.replace("AccountKey=Eby8", "AccountKey=AAAA")
    client = container_client("any-container", TEST_SETTINGS, connection_string=bad)
    with pytest.raises(PermanentStorageError, match="access refused") as err:
        AzureBlobStorage(client, "", TEST_SETTINGS).put_bytes("k", b"x")
    assert "AAAA" not in str(err.value)


@pytest.mark.slow
def test_cli_unknown_bucket_one_line_error(cloud: Any, cli: Any, tmp_path: Path) -> None:
    svc, _ = cloud("s3")
    db = make_shop(tmp_path / "shop.db", rows=20)
    out = cli(
        "backup",
        "--type",
        "sqlite",
        "--database",
        str(db),
        "--storage",
        "s3://no-such-bucket/x",
        env=env_for("s3", svc.endpoint),
    )
    assert out.returncode == 5
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-bucket" in lines[0] and "does not exist" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "damage"), [("s3", "missing"), ("gcs", "altered"), ("azure", "altered")]
)
def test_restore_refuses_missing_or_altered_object(
    kind: str,
    damage: str,
    cloud: Any,
    prefect_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from db_backup.flows.backup import backup_database
    from db_backup.flows.restore import restore_database, verify_backup

    svc, bucket = cloud(kind)
    for key, value in env_for(kind, svc.endpoint).items():
        monkeypatch.setenv(key, value)
    url = url_for(kind, bucket, "d")
    src = make_shop(tmp_path / "shop.db", rows=200)
    first = backup_database(database=str(src), storage=url)
    second = backup_database(database=str(src), storage=url)
    store = open_store(kind, svc.endpoint, bucket, "d")
    [obj] = [i for i in store.list(f"shop/{second}/") if i.key.endswith(".zst")]
    if damage == "missing":
        store.delete(obj.key)
    else:
        data = bytearray(store.get_bytes(obj.key))
        data[len(data) // 2] ^= 0xFF
        store.put_bytes(obj.key, bytes(data))
    target = tmp_path / "restored.db"
    with pytest.raises(IntegrityError, match="missing|sha256"):
        restore_database(name="shop", target=str(target), storage=url)
    assert not target.exists()  # the target was never touched
    with pytest.raises(IntegrityError):
        verify_backup(name="shop", backup=second, storage=url)
    restore_database(name="shop", target=str(target), backup=first, storage=url)
    assert dump_rows(target) == dump_rows(src)  # the earlier backup is untouched
