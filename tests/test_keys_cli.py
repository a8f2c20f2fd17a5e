"""``db-backup key list`` / ``key rotate`` in process (no Prefect server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db_backup.cli import app
from db_backup.crypto import keys
from db_backup.errors import ConfigError, EncryptionError
from db_backup.storage.local import LocalStorage

OLD = "the current passphrase"
NEW = "the next passphrase!!"


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})


def _run(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env=env)


def test_key_list_empty_and_filled(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert "no keys" in _run("key", "list", "--storage", str(store)).output
    key = keys.create_key(LocalStorage(store), OLD)
    out = _run("key", "list", "--storage", str(store))
    assert out.exit_code == 0 and key.key_id_hex in out.output and "scrypt" in out.output
    listed = json.loads(_run("key", "list", "--json", "--storage", str(store)).output)
    assert listed[0]["key_id"] == key.key_id_hex
    assert key.secret_bytes().hex() not in out.output


def test_rotate_needs_a_new_passphrase_without_a_terminal(tmp_path: Path) -> None:
    store = tmp_path / "store"
    keys.create_key(LocalStorage(store), OLD)
    out = _run("key", "rotate", "--storage", str(store), env={keys.PASSPHRASE_ENV: OLD})
    assert out.exit_code == ConfigError.exit_code
    assert keys.NEW_PASSPHRASE_ENV in out.output


def test_rotate_with_wrong_current_passphrase_fails(tmp_path: Path) -> None:
    store = tmp_path / "store"
    keys.create_key(LocalStorage(store), OLD)
    env = {keys.PASSPHRASE_ENV: "wrong passphrase here", keys.NEW_PASSPHRASE_ENV: NEW}
    out = _run("key", "rotate", "--storage", str(store), env=env)
    assert out.exit_code == EncryptionError.exit_code
    assert "wrong passphrase" in out.output
    assert NEW not in out.output and "wrong passphrase here" not in out.output


def test_rotate_then_only_new_passphrase_unlocks(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    key = keys.create_key(store, OLD)
    env = {keys.PASSPHRASE_ENV: OLD, keys.NEW_PASSPHRASE_ENV: NEW}
    out = _run("key", "rotate", "--storage", str(store.root), env=env)
    assert out.exit_code == 0, out.output
    assert f"rotated {key.key_id_hex}" in out.output
    assert keys.unlock_key(store, key.key_id_hex, NEW).key_id == key.key_id
    with pytest.raises(EncryptionError):
        keys.unlock_key(store, key.key_id_hex, OLD)
