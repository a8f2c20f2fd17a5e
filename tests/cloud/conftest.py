"""Emulator fixtures: moto (S3), gcp-storage-emulator (GCS) and Azurite (Azure),
each started once per session on a free 127.0.0.1 port, plus per-test stores
in fresh buckets. A missing emulator skips locally and fails under CI=true."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backup.storage.cloud import MiB, TransferSettings
from tests.cloud import services
from tests.conftest import need_service

# Small parts so tens of MB exercise multipart / resumable / block uploads.
TEST_SETTINGS = TransferSettings(part_size=5 * MiB, concurrency=3, timeout=3, sdk_retries=3)
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@pytest.fixture(scope="session")
def moto() -> Iterator[services.Service]:
    need_service(services.moto_available(), "moto_server (pip install 'moto[server]')")
    with services.moto_server() as svc:
        yield svc


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[services.Service]:
    need_service(services.gcs_emulator_available(), "gcp-storage-emulator")
    with services.gcs_emulator() as svc:
        yield svc


@pytest.fixture(scope="session")
def azurite() -> Iterator[services.Service]:
    need_service(services.azurite_bin() is not None, "azurite-blob (bash scripts/services.sh)")
    with services.azurite() as svc:
        yield svc


# -- environments a URL / CLI run reads ------------------------------------------
def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }


def gcs_env(endpoint: str) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "db-backup-tests"}


def azure_env(endpoint: str) -> dict[str, str]:
    return {"AZURE_STORAGE_CONNECTION_STRING": services.azurite_connection_string(endpoint)}


# -- bucket makers ------------------------------------------------------------------
def make_s3_bucket(endpoint: str) -> str:
    from db_backup.storage.s3 import s3_client

    bucket = unique("s3b")
    client = s3_client(TEST_SETTINGS, endpoint_url=endpoint, **_aws_session())
    client.create_bucket(Bucket=bucket)
    return bucket


def _aws_session() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def make_gcs_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from db_backup.storage.gcs import gcs_client

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    bucket = unique("gcsb")
    gcs_client().create_bucket(bucket)
    return bucket


def make_azure_container(endpoint: str) -> str:
    from db_backup.storage.azure import container_client

    name = unique("azc")
    conn = services.azurite_connection_string(endpoint)
    container_client(name, TEST_SETTINGS, connection_string=conn).create_container()
    return name


def open_store(
    kind: str,
    endpoint: str,
    bucket: str,
    prefix: str = "",
    settings: TransferSettings = TEST_SETTINGS,
) -> Any:
    """A plain adapter on ``bucket`` through ``endpoint`` (an emulator or a fault proxy)."""
    if kind == "s3":
        from db_backup.storage.s3 import S3Storage, s3_client

        client = s3_client(settings, endpoint_url=endpoint, **_aws_session())
        return S3Storage(client, bucket, prefix, settings)
    if kind == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        from db_backup.storage.gcs import GcsStorage

        client = storage.Client(
            project="db-backup-tests",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
        return GcsStorage(client, bucket, prefix, settings)
    from db_backup.storage.azure import AzureBlobStorage, container_client

    conn = services.azurite_connection_string(endpoint)
    return AzureBlobStorage(
        container_client(bucket, settings, connection_string=conn), prefix, settings
    )


@pytest.fixture
def cloud(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], tuple[services.Service, str]]:
    """``cloud(kind)`` -> (running emulator, fresh bucket/container) for s3, gcs or azure."""

    def make(kind: str) -> tuple[services.Service, str]:
        if kind == "s3":
            svc = request.getfixturevalue("moto")
            return svc, make_s3_bucket(svc.endpoint)
        if kind == "gcs":
            svc = request.getfixturevalue("gcs_emulator")
            return svc, make_gcs_bucket(svc.endpoint, monkeypatch)
        svc = request.getfixturevalue("azurite")
        return svc, make_azure_container(svc.endpoint)

    return make


def env_for(kind: str, endpoint: str) -> dict[str, str]:
    return {"s3": s3_env, "gcs": gcs_env, "azure": azure_env}[kind](endpoint)


def url_for(kind: str, bucket: str, prefix: str) -> str:
    scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[kind]
    return f"{scheme}://{bucket}/{prefix}".rstrip("/")


def write_random(path: Path, size: int, seed: int = 1) -> Path:
    """A file of ``size`` pseudo-random (incompressible) bytes, written in 1 MiB blocks."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, MiB)
            fh.write(rng.randbytes(n))
            left -= n
    return path
