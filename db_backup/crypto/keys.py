"""Data keys in the repository, wrapped under a passphrase (no Prefect here).

A repository (one store) holds its keys under ``_keys/`` (the catalogue
ignores names starting with ``_``)::

    _keys/<key id>.json        the data key, wrapped under the passphrase
    _keys/<key id>.next.json   only while ``key rotate`` runs (see below)

A key file holds the key id, the KDF and its parameters (scrypt, a random
salt per wrap), and the 32-byte data key sealed with AES-256-GCM under the
key the KDF derives from the passphrase; the associated data binds the key id
and every KDF parameter, so a wrong passphrase or an edited file is detected
by the authentication tag before anything is decrypted. Without the
passphrase a key file is useless; without the key file the passphrase is
useless. Neither is ever written to a manifest, a log or an argument.

Rotation (:func:`rotate_keys`) re-wraps each data key under a new passphrase;
backups are not rewritten. For each key it writes ``<id>.next.json`` (new
passphrase), reads it back and unlocks it, replaces ``<id>.json``, reads that
back, then deletes ``<id>.next.json``. Whatever step a crash interrupts,
every key stays unlockable: before the replace the old passphrase opens
``<id>.json`` and the new one ``<id>.next.json``; after it the new one opens
both. Readers try both files; running ``key rotate`` again finishes the job.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from db_backup.crypto.stream import (
    ALGORITHM,
    FORMAT_NAME,
    FORMAT_VERSION,
    KEY_ID_SIZE,
    DataKey,
    EncryptingWriter,
)
from db_backup.errors import ConfigError, EncryptionError, ObjectNotFound
from db_backup.manifest import CHUNKED, Manifest
from db_backup.pipeline import EncodeLayer, StagedObject
from db_backup.storage.base import Storage

KEYS_PREFIX = "_keys/"
KEY_FILE_FORMAT = "db-backup-key"
KEY_FILE_VERSION = 1
NEXT_SUFFIX = ".next.json"
# scrypt N=2^17, r=8: 128 MiB, 0.4-1.1 s per unlock here (recorded per file, so it can grow).
SCRYPT_PARAMS = {"n": 2**17, "r": 8, "p": 1}
MIN_PASSPHRASE = 8
PASSPHRASE_ENV = "DB_BACKUP_PASSPHRASE"
NEW_PASSPHRASE_ENV = "DB_BACKUP_NEW_PASSPHRASE"
_MAX_SCRYPT_N = 2**22


def key_file_key(key_id: str) -> str:
    """Where key ``key_id`` lives in the store."""
    return f"{KEYS_PREFIX}{key_id}.json"


def _next_file_key(key_id: str) -> str:
    return f"{KEYS_PREFIX}{key_id}{NEXT_SUFFIX}"


def manifest_record(key_id: str) -> dict[str, Any]:
    """The manifest's ``encryption`` field: public facts only, never key material."""
    return {
        "algorithm": ALGORITHM,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "key_id": key_id,
        "key_file": key_file_key(key_id),
        "kdf": "scrypt",
    }


@dataclass(frozen=True)
class KeySource:
    """Where a task finds a data key: the store, the key id, the passphrase's source.

    Safe to pass as a task parameter and to log: it holds no secret. The
    passphrase comes from the Secret block ``passphrase_secret`` or, when that
    is None, from ``$DB_BACKUP_PASSPHRASE``.
    """

    storage: str
    key_id: str
    passphrase_secret: str | None = None


def backup_key_id(manifest: Manifest) -> str | None:
    """The key id a backup was encrypted with (None when it is not encrypted).

    Refuses a manifest whose objects and ``encryption`` field disagree, or that
    uses an encoding or format version this db-backup does not know.
    """
    known = {"zstd", ALGORITHM, CHUNKED}
    for obj in manifest.objects:
        unknown = [e for e in obj.encoding if e not in known]
        if unknown:
            raise EncryptionError(f"object {obj.key} uses unknown encoding {unknown[0]!r}")
        if obj.encrypted and manifest.encryption is None:
            raise EncryptionError(
                f"object {obj.key} is encrypted but manifest {manifest.name}/"
                f"{manifest.backup_id} has no encryption record"
            )
    if manifest.encryption is None:
        return None
    enc = manifest.encryption
    if enc.get("format_version") != FORMAT_VERSION or enc.get("algorithm") != ALGORITHM:
        raise EncryptionError(
            f"backup {manifest.name}/{manifest.backup_id} uses encryption "
            f"{enc.get('algorithm')!r} format version {enc.get('format_version')!r}; this "
            f"db-backup reads {ALGORITHM} version {FORMAT_VERSION} only (upgrade db-backup)"
        )
    key_id = str(enc.get("key_id", ""))
    if not _is_key_id(key_id):
        raise EncryptionError(f"backup {manifest.name}/{manifest.backup_id} has a bad key id")
    return key_id


def require_encrypted(objects: list[StagedObject]) -> None:
    """EncryptionError unless every staged part went through the cipher (no silent downgrade)."""
    for obj in objects:
        if not obj.encoding or obj.encoding[-1] != ALGORITHM:
            raise EncryptionError(f"staged part {obj.filename} was not encrypted; backup stopped")


@contextlib.contextmanager
def unlocking_layers(
    storage: Storage, key_id: str, passphrase: str
) -> Iterator[list[tuple[str, EncodeLayer]]]:
    """DumpSink encode layers for key ``key_id``, unlocked in a background thread.

    scrypt costs 0.4-2 s; it runs (without the GIL) while the connector
    starts its snapshot, and the first encrypted part waits for it. When the
    unlock fails (wrong passphrase), that EncryptionError is what the block
    raises, whatever the connector made of it; nothing has been stored then.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="db-backup-unlock") as pool:
        future = pool.submit(unlock_key, storage, key_id, passphrase)

        def layer(below: BinaryIO) -> BinaryIO:
            return EncryptingWriter(below, future.result())  # type: ignore[return-value]

        try:
            yield [(ALGORITHM, layer)]
        except BaseException as exc:
            failed = future.exception()  # waits for the unlock to finish
            if failed is not None and failed is not exc:
                raise failed from exc
            raise
        future.result()


def passphrase_from_env() -> str | None:
    """``$DB_BACKUP_PASSPHRASE`` when set and not empty."""
    return os.environ.get(PASSPHRASE_ENV) or None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError as exc:
        raise EncryptionError(f"{what} is damaged (bad base64)") from exc


def _passphrase_bytes(passphrase: str) -> bytes:
    if not passphrase:
        raise ConfigError("the encryption passphrase is empty")
    return unicodedata.normalize("NFC", passphrase).encode()


def _derive(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(_passphrase_bytes(passphrase))


def _wrap_aad(key_id: str, kdf: dict[str, Any]) -> bytes:
    return json.dumps({"key_id": key_id, "kdf": kdf}, sort_keys=True).encode()


@dataclass(frozen=True)
class KeyInfo:
    """What ``key list`` shows about one key file (nothing secret)."""

    key_id: str
    created_at: str
    wrapped_at: str
    kdf: str
    location: str


def wrap_key(key: DataKey, passphrase: str, created_at: str | None = None) -> bytes:
    """The JSON key file holding ``key`` sealed under ``passphrase`` (fresh salt and nonce)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise ConfigError(f"the encryption passphrase must be at least {MIN_PASSPHRASE} characters")
    kdf: dict[str, Any] = {"name": "scrypt", **SCRYPT_PARAMS, "salt": _b64(os.urandom(16))}
    kek = _derive(passphrase, _unb64(kdf["salt"], "salt"), SCRYPT_PARAMS)
    nonce = os.urandom(12)
    sealed = AESGCM(kek).encrypt(nonce, key.secret_bytes(), _wrap_aad(key.key_id_hex, kdf))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "format": KEY_FILE_FORMAT,
        "version": KEY_FILE_VERSION,
        "key_id": key.key_id_hex,
        "algorithm": ALGORITHM,
        "created_at": created_at or now,
        "wrapped_at": now,
        "kdf": kdf,
        "wrap": {"algorithm": "aes-256-gcm", "nonce": _b64(nonce), "ciphertext": _b64(sealed)},
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _parse_key_file(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncryptionError(f"key file {where} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        raise EncryptionError(f"{where} is not a db-backup key file")
    if doc.get("version") != KEY_FILE_VERSION:
        raise EncryptionError(
            f"key file {where} has version {doc.get('version')!r}; this db-backup reads "
            f"version {KEY_FILE_VERSION} only (upgrade db-backup to read it)"
        )
    return doc


def unwrap_key(data: bytes, passphrase: str, where: str) -> DataKey:
    """The data key in a key file; EncryptionError saying the passphrase is wrong otherwise."""
    doc = _parse_key_file(data, where)
    kdf = doc.get("kdf") or {}
    if kdf.get("name") != "scrypt":
        raise EncryptionError(f"key file {where} uses unknown KDF {kdf.get('name')!r}")
    params = {k: int(kdf[k]) for k in ("n", "r", "p")}
    if params["n"] > _MAX_SCRYPT_N:
        raise EncryptionError(f"key file {where} asks for scrypt n={params['n']} (too large)")
    kek = _derive(passphrase, _unb64(kdf.get("salt"), f"key file {where}"), params)
    wrap = doc.get("wrap") or {}
    try:
        secret = AESGCM(kek).decrypt(
            _unb64(wrap.get("nonce"), f"key file {where}"),
            _unb64(wrap.get("ciphertext"), f"key file {where}"),
            _wrap_aad(str(doc["key_id"]), kdf),
        )
    except InvalidTag as exc:
        raise EncryptionError(
            f"wrong passphrase: it does not unlock key {doc['key_id']} ({where}); "
            "check DB_BACKUP_PASSPHRASE or the Secret block"
        ) from exc
    return DataKey(bytes.fromhex(str(doc["key_id"])), secret)


def _read(storage: Storage, key: str) -> bytes | None:
    try:
        return storage.get_bytes(key)
    except ObjectNotFound:
        return None


def unlock_key(storage: Storage, key_id: str, passphrase: str) -> DataKey:
    """Key ``key_id`` of this store, unlocked with ``passphrase``.

    Tries ``<id>.json`` then ``<id>.next.json`` (left by an interrupted
    rotation); EncryptionError when the key is missing or the passphrase wrong.
    """
    where = f"{storage.describe()}/{key_file_key(key_id)}"
    candidates = [
        (k, d)
        for k in (key_file_key(key_id), _next_file_key(key_id))
        if (d := _read(storage, k)) is not None
    ]
    if not candidates:
        raise EncryptionError(
            f"key {key_id} is missing from {where}: without it the backups encrypted with it "
            "cannot be read (put back your copy of the _keys/ directory)"
        )
    first_error: EncryptionError | None = None
    for key, data in candidates:
        try:
            return unwrap_key(data, passphrase, f"{storage.describe()}/{key}")
        except EncryptionError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def list_key_ids(storage: Storage) -> list[str]:
    """Ids of the keys in the store (including one caught mid-rotation), oldest file order."""
    ids: set[str] = set()
    for info in storage.list(KEYS_PREFIX):
        name = info.key[len(KEYS_PREFIX) :]
        stem = name.removesuffix(NEXT_SUFFIX).removesuffix(".json")
        if "/" not in name and name.endswith(".json") and _is_key_id(stem):
            ids.add(stem)
    return sorted(ids)


def _is_key_id(value: str) -> bool:
    return len(value) == 2 * KEY_ID_SIZE and all(c in "0123456789abcdef" for c in value)


def list_keys(storage: Storage) -> list[KeyInfo]:
    """Public facts about every key in the store, oldest first."""
    infos = []
    for key_id in list_key_ids(storage):
        key = key_file_key(key_id)
        data = _read(storage, key) or _read(storage, _next_file_key(key_id)) or b""
        doc = _parse_key_file(data, f"{storage.describe()}/{key}")
        kdf = doc.get("kdf") or {}
        infos.append(
            KeyInfo(
                key_id=key_id,
                created_at=str(doc.get("created_at", "")),
                wrapped_at=str(doc.get("wrapped_at", "")),
                kdf=f"{kdf.get('name')} n={kdf.get('n')} r={kdf.get('r')} p={kdf.get('p')}",
                location=f"{storage.describe()}/{key}",
            )
        )
    return sorted(infos, key=lambda i: (i.created_at, i.key_id))


def key_for_new_backups(
    storage: Storage, passphrase: str, has_encrypted_backups: Callable[[], bool]
) -> str:
    """The id of the key new backups in this store use: the oldest one, created on first use.

    An existing key is not unlocked here (the dump unlocks it, before any
    data is read), so a backup pays for one scrypt run. Refuses to create a
    key when the store holds encrypted backups but no key file (a deleted
    ``_keys/``): a new key would hide the loss until a restore is needed.
    ``has_encrypted_backups`` is only called when the store has no key.
    """
    infos = list_keys(storage)
    if infos:
        return infos[0].key_id
    if has_encrypted_backups():
        raise EncryptionError(
            f"{storage.describe()} holds encrypted backups but no key in {KEYS_PREFIX}: "
            "put back your copy of the _keys/ directory before backing up again"
        )
    return create_key(storage, passphrase).key_id_hex


def create_key(storage: Storage, passphrase: str) -> DataKey:
    """A new random data key, wrapped and stored; read back and unlocked before use."""
    key = DataKey.generate()
    storage.put_bytes(key_file_key(key.key_id_hex), wrap_key(key, passphrase))
    check = unlock_key(storage, key.key_id_hex, passphrase)
    if check.secret_bytes() != key.secret_bytes():
        raise EncryptionError(f"key file {key_file_key(key.key_id_hex)} did not read back intact")
    return key


def rotate_keys(storage: Storage, old: str, new: str) -> list[str]:
    """Re-wrap every key of the store under ``new``; return the key ids.

    Every key is unlocked with ``old`` first, so a wrong old passphrase
    changes nothing. Data objects are not touched.
    """
    if old == new:
        raise ConfigError("the new passphrase is the same as the current one")
    ids = list_key_ids(storage)
    if not ids:
        raise EncryptionError(f"{storage.describe()} has no encryption key to rotate")
    unlocked = [unlock_key(storage, key_id, old) for key_id in ids]
    for key in unlocked:
        _rewrap(storage, key, new)
    return ids


def _rewrap(storage: Storage, key: DataKey, new: str) -> None:
    key_id = key.key_id_hex
    primary = _read(storage, key_file_key(key_id))
    created = None
    if primary is not None:
        created = _parse_key_file(primary, key_file_key(key_id)).get("created_at")
    blob = wrap_key(key, new, created_at=str(created) if created else None)
    for target in (_next_file_key(key_id), key_file_key(key_id)):
        storage.put_bytes(target, blob)
        again = unwrap_key(storage.get_bytes(target), new, f"{storage.describe()}/{target}")
        if again.secret_bytes() != key.secret_bytes():
            raise EncryptionError(f"key file {target} did not read back intact; rotation stopped")
    storage.delete(_next_file_key(key_id))
