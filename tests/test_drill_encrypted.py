"""Restore drills of encrypted backups (issue 13: one read path for restore, export, drill).

Guards: a drill of a good encrypted backup (full or incremental) used to be recorded as a
FAILED check ("cannot be decompressed: Unknown frame descriptor"), after which retention
stopped counting that backup. Now the drill reads through the same path as restore: with
the passphrase it passes; without it the run fails with a clear "needs ... passphrase"
message that is a configuration problem (ConfigError), and no verdict is recorded.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from db_backup.catalog import find_backup
from db_backup.checks.drill import run_drill
from db_backup.checks.records import latest_checks
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.crypto import keys
from db_backup.errors import ConfigError
from db_backup.storage.local import LocalStorage
from tests.sqlite_helpers import make_shop

PASSPHRASE = "tests: drills of encrypted backups"


@pytest.fixture
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_drill_of_an_encrypted_backup_needs_and_uses_the_passphrase(
    prefect_api: str,
    cheap_scrypt: None,
    mode: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.blocks.system import Secret

    from db_backup.flows.backup import backup_database
    from db_backup.flows.drill import drill_backup

    shop = make_shop(tmp_path / "shop.db", rows=300)
    store = tmp_path / "store"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    backup_id = backup_database(
        database=str(shop), storage=str(store), name="shop", encrypt=True, mode=mode
    )
    manifest = find_backup(LocalStorage(store), "shop", backup_id)
    assert manifest.encryption is not None

    # Without the passphrase: a configuration problem, no verdict on the backup.
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    with pytest.raises(ConfigError, match="needs a passphrase.*encrypted with key"):
        drill_backup(name="shop", storage=str(store), scratch=str(scratch))
    assert latest_checks(LocalStorage(store), "shop") == {}  # retention still counts it
    assert list(scratch.iterdir()) == []
    target = SqliteConnector(scratch).scratch_target("plain")
    staging = tmp_path / "staging"
    staging.mkdir()
    try:
        with pytest.raises(ConfigError, match=f"shop/{backup_id} .*needs the passphrase"):
            run_drill(LocalStorage(store), manifest, target, staging)
    finally:
        target.drop()

    # With the passphrase, from a Secret block named by passphrase_secret: passes, recorded.
    secret = f"drill-pass-{uuid.uuid4().hex[:8]}"
    Secret(value=PASSPHRASE).save(secret)
    result = drill_backup(
        name="shop", storage=str(store), scratch=str(scratch), passphrase_secret=secret
    )
    assert result["ok"], result["summary"]
    state = latest_checks(LocalStorage(store), "shop")[("shop", backup_id)]
    assert state.drill is not None and state.drill.ok
    assert state.drill.details["tables"]["orders"] == {"manifest": 300, "restored": 300}
    assert list(scratch.iterdir()) == []
