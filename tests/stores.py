"""One fresh store of each kind for tests outside tests/cloud: a local directory,
S3 (moto), GCS (gcp-storage-emulator) and Azure (Azurite).

Cloud stores are reached through a :class:`~tests.faultproxy.FaultProxy`, so a
test can inject 503s, resets or an outage between the adapter and the emulator.
The GCS proxy also enforces ``ifGenerationMatch=0`` (create only if absent),
which real GCS honours and gcp-storage-emulator ignores.

Test modules import the emulator fixtures from here (they are session-scoped
and shared with tests/cloud).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from db_backup.storage.base import Storage
from db_backup.storage.local import LocalStorage
from tests.cloud import services
from tests.cloud.conftest import TEST_SETTINGS, azurite, gcs_emulator, moto, open_store
from tests.faultproxy import FaultProxy

__all__ = ["STORE_KINDS", "StoreUnderTest", "azurite", "gcs_emulator", "moto", "stores_fixture"]

STORE_KINDS = ["local", "s3", "gcs", "azure"]
_EMULATOR_FIXTURE = {"s3": "moto", "gcs": "gcs_emulator", "azure": "azurite"}
_counter = itertools.count()


@dataclass
class StoreUnderTest:
    """A fresh store, how to reach it without faults, and its fault proxy (cloud only)."""

    kind: str
    store: Storage
    direct: Storage
    proxy: FaultProxy | None = None
    bucket: str = ""
    endpoint: str = ""

    def impatient(self) -> Storage:
        """The proxied store with one SDK attempt and a short timeout (outages fail fast)."""
        if self.proxy is None:
            return self.store
        settings = replace(TEST_SETTINGS, sdk_retries=1, timeout=2)
        return open_store(self.kind, self.proxy.endpoint, self.bucket, "", settings)  # type: ignore[no-any-return]


def _bucket(kind: str, endpoint: str) -> str:
    name = f"{kind}b-{os.getpid()}-{next(_counter)}"
    admin = open_store(kind, endpoint, name)
    if kind == "s3":
        admin.client.create_bucket(Bucket=name)
    elif kind == "gcs":
        admin.client.create_bucket(name)
    else:
        admin.container.create_container()
    return name


@pytest.fixture(name="stores")
def stores_fixture(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], StoreUnderTest]]:
    """``stores(kind)`` -> a fresh, empty :class:`StoreUnderTest` of that kind."""
    proxies: list[FaultProxy] = []

    def make(kind: str) -> StoreUnderTest:
        if kind == "local":
            store = LocalStorage(tmp_path / f"store-{next(_counter)}")
            return StoreUnderTest(kind, store, store)
        svc: services.Service = request.getfixturevalue(_EMULATOR_FIXTURE[kind])
        bucket = _bucket(kind, svc.endpoint)
        proxy = FaultProxy(svc.port, stall_seconds=5, gcs_preconditions=kind == "gcs")
        proxies.append(proxy)
        store: Any = open_store(kind, proxy.endpoint, bucket)
        direct = open_store(kind, svc.endpoint, bucket)
        return StoreUnderTest(kind, store, direct, proxy, bucket, svc.endpoint)

    yield make
    for proxy in proxies:
        proxy.close()
