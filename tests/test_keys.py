"""Key files in the repository: wrap/unwrap, wrong passphrase, rotation and its crash windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db_backup.crypto import keys
from db_backup.crypto import stream as crypto
from db_backup.crypto.stream import DataKey
from db_backup.errors import ConfigError, EncryptionError
from db_backup.storage.local import LocalStorage

OLD = "correct horse battery staple"
NEW = "a much newer passphrase 2026"


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap scrypt in tests (the real cost is 128 MiB / ~0.4 s per unlock)."""
    monkeypatch.setattr(keys, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_created_key_unlocks_with_its_passphrase(store: LocalStorage) -> None:
    key_id = keys.key_for_new_backups(store, OLD, lambda: False)
    key = keys.unlock_key(store, key_id, OLD)
    assert key.open(key.seal(b"x")) == b"x"
    # the next backup reuses the same key rather than creating another
    assert keys.key_for_new_backups(store, OLD, lambda: True) == key_id
    assert keys.list_key_ids(store) == [key_id]


def test_key_file_holds_no_key_material_in_clear(store: LocalStorage) -> None:
    key = keys.create_key(store, OLD)
    text = (store.root / keys.key_file_key(key.key_id_hex)).read_text()
    import base64

    assert key.secret_bytes().hex() not in text
    assert base64.b64encode(key.secret_bytes()).decode() not in text
    assert OLD not in text
    doc = json.loads(text)
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["salt"]


def test_wrong_passphrase_says_so(store: LocalStorage) -> None:
    key = keys.create_key(store, OLD)
    with pytest.raises(EncryptionError, match="wrong passphrase") as err:
        keys.unlock_key(store, key.key_id_hex, "not the passphrase")
    assert OLD not in str(err.value)


def test_edited_key_file_is_refused(store: LocalStorage) -> None:
    key = keys.create_key(store, OLD)
    path = store.root / keys.key_file_key(key.key_id_hex)
    doc = json.loads(path.read_text())
    doc["kdf"]["r"] = 4  # a downgraded KDF must not be accepted
    path.write_text(json.dumps(doc))
    with pytest.raises(EncryptionError):
        keys.unlock_key(store, key.key_id_hex, OLD)


def test_unknown_key_file_version_is_refused(store: LocalStorage) -> None:
    key = keys.create_key(store, OLD)
    path = store.root / keys.key_file_key(key.key_id_hex)
    doc = json.loads(path.read_text())
    doc["version"] = 9
    path.write_text(json.dumps(doc))
    with pytest.raises(EncryptionError, match="version 9"):
        keys.unlock_key(store, key.key_id_hex, OLD)


def test_missing_key_file_is_named(store: LocalStorage) -> None:
    with pytest.raises(EncryptionError, match="missing.*_keys"):
        keys.unlock_key(store, "ab" * 16, OLD)


def test_no_new_key_when_encrypted_backups_lost_their_key(store: LocalStorage) -> None:
    with pytest.raises(EncryptionError, match="no key"):
        keys.key_for_new_backups(store, OLD, lambda: True)
    assert keys.list_key_ids(store) == []


def test_short_or_empty_passphrase_is_refused(store: LocalStorage) -> None:
    with pytest.raises(ConfigError, match="at least"):
        keys.create_key(store, "short")
    with pytest.raises(ConfigError, match="empty"):
        keys.unwrap_key(keys.wrap_key(DataKey.generate(), OLD), "", "k")


def test_rotate_rewraps_without_changing_the_data_key(store: LocalStorage) -> None:
    key = keys.create_key(store, OLD)
    sealed = key.seal(b"backup bytes")
    assert keys.rotate_keys(store, OLD, NEW) == [key.key_id_hex]
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        keys.unlock_key(store, key.key_id_hex, OLD)
    rotated = keys.unlock_key(store, key.key_id_hex, NEW)
    assert rotated.open(sealed) == b"backup bytes"
    assert not store.exists(f"_keys/{key.key_id_hex}.next.json")
    info = keys.list_keys(store)[0]
    assert info.created_at <= info.wrapped_at


def test_rotate_with_wrong_old_passphrase_changes_nothing(store: LocalStorage) -> None:
    key = keys.create_key(store, OLD)
    before = (store.root / keys.key_file_key(key.key_id_hex)).read_bytes()
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        keys.rotate_keys(store, "wrong passphrase!", NEW)
    assert (store.root / keys.key_file_key(key.key_id_hex)).read_bytes() == before


def test_interrupted_rotation_leaves_both_passphrases_working(store: LocalStorage) -> None:
    """Crash after <id>.next.json is written, before <id>.json is replaced."""
    key = keys.create_key(store, OLD)
    store.put_bytes(f"_keys/{key.key_id_hex}.next.json", keys.wrap_key(key, NEW))
    assert keys.unlock_key(store, key.key_id_hex, OLD).key_id == key.key_id
    assert keys.unlock_key(store, key.key_id_hex, NEW).key_id == key.key_id
    assert keys.list_key_ids(store) == [key.key_id_hex]
    # running rotate again (from either passphrase) finishes the job
    keys.rotate_keys(store, OLD, NEW)
    assert not store.exists(f"_keys/{key.key_id_hex}.next.json")
    with pytest.raises(EncryptionError):
        keys.unlock_key(store, key.key_id_hex, OLD)


def test_rotate_refuses_same_passphrase_and_empty_store(store: LocalStorage) -> None:
    with pytest.raises(EncryptionError, match="no encryption key"):
        keys.rotate_keys(store, OLD, NEW)
    keys.create_key(store, OLD)
    with pytest.raises(ConfigError, match="same"):
        keys.rotate_keys(store, OLD, OLD)


def test_backup_key_id_checks_the_manifest() -> None:
    from datetime import UTC, datetime

    from db_backup.manifest import Manifest, StoredObject

    now = datetime.now(UTC)
    obj = StoredObject(
        key="a/1/x.zst",
        part="database",
        format="sqlite3",
        encoding=["zstd", "aes-256-gcm"],
        size=1,
        sha256="0",
        raw_size=1,
        raw_sha256="0",
    )
    base = {
        "backup_id": "20260101T000000Z",
        "name": "a",
        "engine": "sqlite",
        "source": "s",
        "started_at": now,
        "finished_at": now,
        "objects": [obj],
    }
    with pytest.raises(EncryptionError, match="no encryption record"):
        keys.backup_key_id(Manifest(**base))
    record = keys.manifest_record("ab" * 16)
    assert keys.backup_key_id(Manifest(**base, encryption=record)) == "ab" * 16
    with pytest.raises(EncryptionError, match="version 7"):
        keys.backup_key_id(Manifest(**base, encryption={**record, "format_version": 7}))
    plain = obj.model_copy(update={"encoding": ["zstd", "rot13"]})
    with pytest.raises(EncryptionError, match="rot13"):
        keys.backup_key_id(Manifest(**{**base, "objects": [plain]}))


def test_unlocking_layers_encrypt_with_the_stored_key(store: LocalStorage, tmp_path: Path) -> None:
    from db_backup.pipeline import DumpSink

    key = keys.create_key(store, OLD)
    with keys.unlocking_layers(store, key.key_id_hex, OLD) as layers:
        sink = DumpSink(tmp_path, layers=layers)
        with sink.open("database", "x", "raw") as out:
            out.write(b"payload " * 1000)
    assert sink.objects[0].encoding == ["zstd", "aes-256-gcm"]
    blob = sink.objects[0].path.read_bytes()
    assert blob.startswith(crypto.MAGIC) and key.key_id in blob[: crypto.HEADER_SIZE]


def test_unlocking_layers_report_a_wrong_passphrase_whatever_the_connector_raised(
    store: LocalStorage,
) -> None:
    import io

    key = keys.create_key(store, OLD)
    with (
        pytest.raises(EncryptionError, match="wrong passphrase"),
        keys.unlocking_layers(store, key.key_id_hex, "not the passphrase") as layers,
    ):
        try:
            layers[0][1](io.BytesIO())
        except EncryptionError as exc:  # a connector that wraps what its sink raised
            raise RuntimeError("pg_dump pipe closed") from exc
    with (
        pytest.raises(EncryptionError, match="wrong passphrase"),
        keys.unlocking_layers(store, key.key_id_hex, "not the passphrase"),
    ):
        pass  # even when no part was opened
