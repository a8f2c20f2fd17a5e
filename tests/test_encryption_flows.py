"""Encryption through the real flows and the CLI: round trips, refusals, tampering, rotation."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from db_backup.catalog import find_backup, list_backups
from db_backup.crypto import keys
from db_backup.crypto.stream import HEADER_SIZE, TAG_SIZE, is_encrypted
from db_backup.errors import EncryptionError
from db_backup.manifest import manifest_key
from db_backup.storage.local import LocalStorage
from tests.encryption_cases import ENGINES, engine_case

PASSPHRASE = "tests: a passphrase long enough"


@pytest.fixture
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap scrypt for in-process flows (the CLI subprocess pays the real price)."""
    monkeypatch.setattr(keys, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch, fast_scrypt: None) -> str:
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    return PASSPHRASE


def _backup(database: str, store: Path, encrypt: bool = True, name: str = "shop") -> str:
    from db_backup.flows.backup import backup_database

    return backup_database(database=database, storage=str(store), name=name, encrypt=encrypt)


def _restore(store: Path, target: str, name: str = "shop", force: bool = False) -> dict:
    from db_backup.flows.restore import restore_database

    return restore_database(name=name, target=target, storage=str(store), force=force)


def _readable(blob: bytes) -> bytes:
    """What anyone holding ``blob`` can read: the bytes, and their zstd decoding if any."""
    import zstandard

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        return blob + reader.read()
    except zstandard.ZstdError:
        return blob


def _stored_objects(store: Path, name: str = "shop") -> dict[str, bytes]:
    manifest = find_backup(LocalStorage(store), name)
    return {o.key: (store / o.key).read_bytes() for o in manifest.objects}


@pytest.mark.parametrize("engine", ENGINES)
def test_encrypted_round_trip_per_engine(
    engine: str, prefect_api: str, passphrase: str, tmp_path: Path
) -> None:
    from db_backup.flows.restore import verify_backup

    store = tmp_path / "store"
    with engine_case(engine, tmp_path) as case:
        _backup(case.source, store)
        manifest = find_backup(LocalStorage(store), "shop")
        assert manifest.encryption is not None
        assert manifest.encryption["algorithm"] == "aes-256-gcm"
        assert all(o.encoding[-1] == "aes-256-gcm" for o in manifest.objects)
        for blob in _stored_objects(store).values():
            assert is_encrypted(blob)
            assert case.marker.encode() not in _readable(blob)
        assert verify_backup(name="shop", storage=str(store)) == [manifest.backup_id]
        _restore(store, case.target)
        assert case.read_rows(case.target) == case.read_rows(case.source)


def test_stored_bytes_hold_no_plaintext(prefect_api: str, passphrase: str, tmp_path: Path) -> None:
    """The same database backed up twice: the marker is readable from the plain backup's
    stored bytes (so the search works) and not from the encrypted one's."""
    store = tmp_path / "store"
    with engine_case("sqlite", tmp_path) as case:
        _backup(case.source, store, encrypt=False, name="plain")
        _backup(case.source, store, encrypt=True, name="secret")
        plain = b"".join(_readable(b) for b in _stored_objects(store, "plain").values())
        secret = b"".join(_readable(b) for b in _stored_objects(store, "secret").values())
        assert case.marker.encode() in plain
        assert case.marker.encode() not in secret
        everything = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
        assert PASSPHRASE.encode() not in everything
        manifest = json.loads(
            (
                store / manifest_key("secret", find_backup(LocalStorage(store), "secret").backup_id)
            ).read_text()
        )
        assert set(manifest["encryption"]) == {
            "algorithm",
            "format",
            "format_version",
            "key_id",
            "key_file",
            "kdf",
        }


def test_encrypt_without_passphrase_fails_and_writes_no_backup(
    prefect_api: str, fast_scrypt: None, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with (
        engine_case("sqlite", tmp_path) as case,
        pytest.raises(EncryptionError, match="DB_BACKUP_PASSPHRASE"),
    ):
        _backup(case.source, store)
    assert list_backups(LocalStorage(store)) == []


def test_backup_with_wrong_passphrase_fails_and_stores_nothing(
    prefect_api: str, passphrase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    with engine_case("sqlite", tmp_path) as case:
        _backup(case.source, store)
        monkeypatch.setenv(keys.PASSPHRASE_ENV, "not the passphrase of this store")
        with pytest.raises(EncryptionError, match="wrong passphrase"):
            _backup(case.source, store)
    assert len(list_backups(LocalStorage(store))) == 1
    assert len(keys.list_key_ids(LocalStorage(store))) == 1
    assert len(list((store / "shop").iterdir())) == 1  # no objects of the failed run


def _precious_target(tmp_path: Path) -> Path:
    target = tmp_path / "precious.db"
    conn = sqlite3.connect(target)
    conn.execute("CREATE TABLE keep (v TEXT)")
    conn.execute("INSERT INTO keep VALUES ('do not touch')")
    conn.commit()
    conn.close()
    return target


def test_restore_with_wrong_passphrase_fails_before_the_target(
    prefect_api: str, passphrase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    with engine_case("sqlite", tmp_path) as case:
        _backup(case.source, store)
    target = _precious_target(tmp_path)
    before = target.read_bytes()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "this is not the passphrase")
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        _restore(store, str(target), force=True)
    assert target.read_bytes() == before
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    with pytest.raises(EncryptionError, match="needs a passphrase.*encrypted with key"):
        _restore(store, str(target), force=True)
    assert target.read_bytes() == before


def _rewrite(store: Path, name: str, change: str) -> None:
    """Alter the stored object AND fix its size/sha256 in the manifest, as someone with
    write access to the store could: only the cipher can notice."""
    manifest = find_backup(LocalStorage(store), name)
    obj = manifest.objects[0]
    data = bytearray((store / obj.key).read_bytes())
    sealed = (1024 * 1024) + TAG_SIZE
    assert len(data) > HEADER_SIZE + 2 * sealed, "the object needs 3+ frames for this test"
    if change == "bit-flip":
        data[HEADER_SIZE + sealed + 100] ^= 0x04
    elif change == "truncated":
        data = data[: HEADER_SIZE + 2 * sealed]
    elif change == "frame-dropped":
        del data[HEADER_SIZE + sealed : HEADER_SIZE + 2 * sealed]
    elif change == "frames-reordered":
        one = data[HEADER_SIZE : HEADER_SIZE + sealed]
        two = data[HEADER_SIZE + sealed : HEADER_SIZE + 2 * sealed]
        data[HEADER_SIZE : HEADER_SIZE + 2 * sealed] = two + one
    (store / obj.key).write_bytes(bytes(data))
    new_obj = obj.model_copy(update={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    fixed = manifest.model_copy(update={"objects": [new_obj]})
    (store / manifest_key(name, manifest.backup_id)).write_bytes(fixed.to_json())


@pytest.fixture
def big_encrypted_backup(prefect_api: str, passphrase: str, tmp_path: Path) -> Path:
    """An encrypted backup whose object spans several 1 MiB frames (incompressible rows)."""
    src = tmp_path / "big.db"
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, payload BLOB)")
    conn.executemany(
        "INSERT INTO blobs(payload) VALUES (?)", [(os.urandom(4096),) for _ in range(900)]
    )
    conn.commit()
    conn.close()
    store = tmp_path / "store"
    _backup(str(src), store, name="big")
    return store


@pytest.mark.parametrize("change", ["bit-flip", "truncated", "frame-dropped", "frames-reordered"])
def test_tampered_object_fails_restore_before_the_target(
    big_encrypted_backup: Path, tmp_path: Path, change: str
) -> None:
    store = big_encrypted_backup
    _rewrite(store, "big", change)
    target = _precious_target(tmp_path)
    before = target.read_bytes()
    with pytest.raises(EncryptionError, match="failed authentication"):
        _restore(store, str(target), name="big", force=True)
    assert target.read_bytes() == before


def test_cli_encrypted_backup_rotate_and_restore(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    with engine_case("sqlite", tmp_path) as case:
        env = {keys.PASSPHRASE_ENV: PASSPHRASE}
        done = cli(
            "backup", "--database", case.source, "--storage", str(store), "--encrypt", env=env
        )
        assert done.returncode == 0, done.stderr
        objects_before = _stored_objects(store)
        assert find_backup(LocalStorage(store), "shop").summary()["encrypted"] is True

        new = "the rotated passphrase, 2026"
        rotated = cli(
            "key", "rotate", "--storage", str(store), env={**env, keys.NEW_PASSPHRASE_ENV: new}
        )
        assert rotated.returncode == 0, rotated.stderr
        assert PASSPHRASE not in rotated.stdout + rotated.stderr
        assert _stored_objects(store) == objects_before  # data not rewritten

        old_try = cli(
            "restore",
            "latest",
            "--name",
            "shop",
            "--to",
            case.target,
            "--storage",
            str(store),
            env=env,
        )
        assert old_try.returncode == EncryptionError.exit_code
        assert "wrong passphrase" in old_try.stderr
        assert not Path(case.target).exists()

        ok = cli(
            "restore",
            "latest",
            "--name",
            "shop",
            "--to",
            case.target,
            "--storage",
            str(store),
            env={keys.PASSPHRASE_ENV: new},
        )
        assert ok.returncode == 0, ok.stderr
        assert case.read_rows(case.target) == case.read_rows(case.source)


def test_cli_encrypt_without_passphrase_fails(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with engine_case("sqlite", tmp_path) as case:
        out = cli(
            "backup", "--database", case.source, "--storage", str(tmp_path / "st"), "--encrypt"
        )
    assert out.returncode == EncryptionError.exit_code
    assert "DB_BACKUP_PASSPHRASE" in out.stderr
    assert not any((tmp_path / "st").rglob("manifest.json"))
