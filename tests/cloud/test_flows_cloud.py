"""Backups of a real SQLite database through the Prefect flows to every cloud
emulator: URL form and block form, restore compared row by row, the CLI once,
faults that Prefect's task retries ride out, and faults that never stop."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from db_backup.catalog import list_backups
from db_backup.errors import StorageError
from db_backup.manifest import manifest_key
from db_backup.storage.cloud import MiB
from tests.cloud.conftest import env_for, open_store, url_for
from tests.faultproxy import FaultProxy
from tests.sqlite_helpers import dump_rows, make_shop

KINDS = ["s3", "gcs", "azure"]


def make_db(path: Path, blob_mib: int = 0) -> Path:
    """The shop database, plus ``blob_mib`` MiB of incompressible rows (multipart sizes)."""
    make_shop(path, rows=300)
    if blob_mib:
        import random

        rng = random.Random(5)
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany(
            "INSERT INTO blobs(data) VALUES (?)", [(rng.randbytes(MiB),) for _ in range(blob_mib)]
        )
        conn.commit()
        conn.close()
    return path


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows' I/O tasks with sub-second retry delays (same counts and condition)."""
    from db_backup.flows import backup as backup_flow
    from db_backup.flows import restore as restore_flow

    for module, names in (
        (backup_flow, ["upload_file", "write_manifest", "dump_database"]),
        (restore_flow, ["download_object", "find_manifest", "verify_one"]),
    ):
        for name in names:
            task = getattr(module, name)
            monkeypatch.setattr(
                module, name, task.with_options(retry_delay_seconds=0.2, retry_jitter_factor=0)
            )


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_backup_restore_round_trip_by_url(
    kind: str, cloud: Any, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db_backup.flows.backup import backup_database
    from db_backup.flows.restore import restore_database, verify_backup

    svc, bucket = cloud(kind)
    use_env(monkeypatch, {**env_for(kind, svc.endpoint), "DB_BACKUP_PART_SIZE": "5MiB"})
    url = url_for(kind, bucket, "nightly")
    src = make_db(tmp_path / "shop.db", blob_mib=12)  # > 2 parts once compressed
    backup_id = backup_database(database=str(src), storage=url)
    store = open_store(kind, svc.endpoint, bucket, "nightly")
    [manifest] = list_backups(store, "shop")
    assert manifest.backup_id == backup_id
    [obj] = manifest.objects
    assert obj.store_check and obj.store_check.startswith(("s3:", "gcs:", "azure:"))
    assert "per-part" in obj.store_check or "per-block" in obj.store_check or kind == "gcs"
    with store.open_read(obj.key) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == obj.sha256
    verify_backup(name="shop", storage=url)
    target = tmp_path / "restored.db"
    restore_database(name="shop", target=str(target), storage=url)
    assert dump_rows(target) == dump_rows(src)


def _save_block(kind: str, endpoint: str, bucket: str, name: str) -> str:
    if kind == "s3":
        from prefect_aws import AwsCredentials, S3Bucket
        from prefect_aws.client_parameters import AwsClientParameters

        creds = AwsCredentials(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
        )
        S3Bucket(bucket_name=bucket, credentials=creds, bucket_folder="blk").save(
            name, overwrite=True
        )
        return f"s3-bucket/{name}"
    if kind == "gcs":
        from prefect_gcp import GcpCredentials, GcsBucket

        GcsBucket(
            bucket=bucket, gcp_credentials=GcpCredentials(project="tests"), bucket_folder="blk"
        ).save(name, overwrite=True)
        return f"gcs-bucket/{name}"
    from prefect_azure import AzureBlobStorageContainer
    from prefect_azure.credentials import AzureBlobStorageCredentials

    from tests.cloud.services import azurite_connection_string

    AzureBlobStorageContainer(
        container_name=bucket,
        credentials=AzureBlobStorageCredentials(
            connection_string=azurite_connection_string(endpoint)
        ),
        base_folder="blk",
    ).save(name, overwrite=True)
    return f"azure-blob-storage-container/{name}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_backup_restore_round_trip_by_block(
    kind: str, cloud: Any, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db_backup.flows.backup import backup_database
    from db_backup.flows.restore import restore_database

    svc, bucket = cloud(kind)
    if kind == "gcs":  # offline: GcpCredentials would ask google.auth for real credentials
        from google.auth.credentials import AnonymousCredentials
        from prefect_gcp import GcpCredentials

        monkeypatch.setenv("STORAGE_EMULATOR_HOST", svc.endpoint)
        monkeypatch.setattr(
            GcpCredentials,
            "get_credentials_from_service_account",
            lambda self: AnonymousCredentials(),
        )
    ref = _save_block(kind, svc.endpoint, bucket, f"bk-{bucket}")
    src = make_db(tmp_path / "shop.db")
    backup_id = backup_database(database=str(src), storage=ref)
    store = open_store(kind, svc.endpoint, bucket, "blk")
    assert store.exists(manifest_key("shop", backup_id))  # under the block's folder
    target = tmp_path / "restored.db"
    restore_database(name="shop", target=str(target), storage=ref)
    assert dump_rows(target) == dump_rows(src)


@pytest.mark.slow
def test_cli_backup_list_restore_to_s3_url(cloud: Any, cli: Any, tmp_path: Path) -> None:
    svc, bucket = cloud("s3")
    env = env_for("s3", svc.endpoint)
    url = url_for("s3", bucket, "cli")
    src = make_db(tmp_path / "shop.db")
    done = cli("backup", "--type", "sqlite", "--database", str(src), "--storage", url, env=env)
    assert done.returncode == 0, done.stderr
    backup_id = done.stdout.strip().splitlines()[-1]
    listed = cli("list", "--json", "--storage", url, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [b["id"] for b in json.loads(listed.stdout)] == [backup_id]
    target = tmp_path / "restored.db"
    restored = cli(
        "restore", "latest", "--name", "shop", "--to", str(target), "--storage", url, env=env
    )
    assert restored.returncode == 0, restored.stderr
    assert dump_rows(target) == dump_rows(src)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_backup_completes_through_faults_with_prefect_retries(
    kind: str,
    cloud: Any,
    prefect_api: str,
    fast_retries: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One SDK attempt per request, so the faults reach the Prefect task, which retries."""
    from db_backup.flows.backup import backup_database

    svc, bucket = cloud(kind)
    with FaultProxy(svc.port) as proxy:
        use_env(
            monkeypatch,
            {
                **env_for(kind, proxy.endpoint),
                "DB_BACKUP_PART_SIZE": "5MiB",
                "DB_BACKUP_STORAGE_RETRIES": "1",
                "DB_BACKUP_STORAGE_TIMEOUT": "5",
            },
        )
        src = make_db(tmp_path / "shop.db", blob_mib=8)
        # The faults hit the dump's upload; the id reservation written before it is let through.
        data_only = {"method": "PUT", "path_excludes": "reservation.json"}
        proxy.add("503", times=2, **data_only)
        proxy.add("cut" if kind == "gcs" else "reset", times=1, **data_only)
        with caplog.at_level(logging.INFO):
            backup_id = backup_database(database=str(src), storage=url_for(kind, bucket, "f"))
        assert len(proxy.injected) == 3
    retries = [r for r in caplog.records if "Retry 1/3 will start" in r.getMessage()]
    assert retries, "the upload task's retries should be in the Prefect logs"
    store = open_store(kind, svc.endpoint, bucket, "f")
    [manifest] = list_backups(store, "shop")
    assert manifest.backup_id == backup_id
    dest = tmp_path / "back.zst"
    store.get_file(manifest.objects[0].key, dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == manifest.objects[0].sha256


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_endless_faults_fail_the_backup_without_manifest_or_partial_object(
    kind: str,
    cloud: Any,
    prefect_api: str,
    fast_retries: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from db_backup.flows.backup import backup_database

    svc, bucket = cloud(kind)
    direct = open_store(kind, svc.endpoint, bucket, "f")
    src = make_db(tmp_path / "shop.db", blob_mib=8)
    with FaultProxy(svc.port) as proxy:
        use_env(
            monkeypatch,
            {
                **env_for(kind, proxy.endpoint),
                "DB_BACKUP_PART_SIZE": "5MiB",
                "DB_BACKUP_STORAGE_RETRIES": "1",
                "DB_BACKUP_STORAGE_TIMEOUT": "3",
            },
        )
        url = url_for(kind, bucket, "f")
        first = backup_database(database=str(src), storage=url)
        before = sorted(i.key for i in direct.list(""))
        proxy.add(
            "cut" if kind == "gcs" else "reset",
            times=None,
            method="PUT",
            path_excludes="reservation.json",
        )
        with pytest.raises(StorageError):
            backup_database(database=str(src), storage=url, allow_shrink=True)
        assert len(proxy.injected) >= 4  # the first try and three Prefect retries
    [good] = list_backups(direct, "shop")
    assert good.backup_id == first  # the failed run is not a backup; the first is intact
    new = [i for i in direct.list("") if i.key not in before]
    assert not any(i.key.endswith("manifest.json") for i in new)
    if kind == "gcs":
        # The response was cut after the last chunk arrived: GCS may have completed the
        # object. It is then whole (an orphan for prune), never a partial one.
        # Its id stays reserved (reservation.json), so no later run writes over it.
        data = [i for i in new if not i.key.endswith("/reservation.json")]
        assert all(i.size == good.objects[0].size for i in data), new
    else:
        assert new == []  # the upload was reset mid-body: nothing at all is visible
