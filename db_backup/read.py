"""The one read path: from a stored backup to what a connector restores from.

Restore, export and drill all read a backup through here, so every object is
downloaded, its size and sha256 checked against the manifest, and every sealed
byte authenticated before anything uses it:

* a whole object (full backup) is staged as stored and its sha256 checked; an
  encrypted one is then decrypted once to authenticate it (output discarded), and
  the :class:`RestoreSource` carries the layer that decrypts it again as the
  connector reads;
* a chunked object (incremental backup) is rebuilt from its chunks, each one
  checked (and, when encrypted, authenticated and decrypted) on the way, into the
  plain zstd stream a full backup stages.

An encrypted backup needs its data key: without one, :class:`PassphraseRequired`
(a configuration problem, not a verdict on the backup) is raised before any download.
"""

from __future__ import annotations

import errno
from pathlib import Path

from db_backup.chunks.reader import materialize
from db_backup.connectors.base import RestoreSource
from db_backup.crypto.keys import PASSPHRASE_ENV, backup_key_id
from db_backup.crypto.stream import DataKey
from db_backup.errors import (
    EncryptionError,
    IntegrityError,
    ObjectNotFound,
    PassphraseRequired,
    StagingError,
)
from db_backup.manifest import Manifest, StoredObject
from db_backup.pipeline import COPY_CHUNK, DecodeLayer, check_digest, sha256_file
from db_backup.storage.base import Storage


def read_backup(
    storage: Storage,
    manifest: Manifest,
    staging: Path,
    key: DataKey | None = None,
    purpose: str = "reading it",
) -> RestoreSource:
    """Download, check and authenticate every object of ``manifest`` into ``staging``.

    ``key`` is the backup's data key (needed when it is encrypted, ignored when
    not); ``purpose`` names the reader in the error raised without it. The result
    is what :meth:`Connector.restore` reads: nothing in it is unverified.
    """
    key = require_key(manifest, key, purpose)
    staged = {obj.key: download_verified(storage, obj, staging, key) for obj in manifest.objects}
    return restore_source(manifest, staged, key)


def require_key(manifest: Manifest, key: DataKey | None, purpose: str) -> DataKey | None:
    """The data key to read ``manifest`` with (None: not encrypted).

    PassphraseRequired without a key for an encrypted backup; EncryptionError
    when ``key`` is another key than the backup's.
    """
    key_id = backup_key_id(manifest)
    if key_id is None:
        return None
    where = f"backup {manifest.name}/{manifest.backup_id} is encrypted with key {key_id}"
    if key is None:
        raise PassphraseRequired(
            f"{where}: {purpose} needs that key and so needs the passphrase "
            f"(set {PASSPHRASE_ENV} or name a Secret block with passphrase_secret)"
        )
    if key.key_id_hex != key_id:
        raise EncryptionError(f"{where}, not with key {key.key_id_hex}: {purpose} needs that key")
    return key


def download_verified(
    storage: Storage, obj: StoredObject, staging: Path, key: DataKey | None = None
) -> Path:
    """Download one object and check size and sha256 before anyone reads it.

    A chunked object (incremental backup) is rebuilt from its chunks, each one
    checked, into the same staged form as an unencrypted full backup's object;
    an encrypted one needs ``key`` and is authenticated and decrypted on the way
    (the staged file is then plain zstd). Other objects are staged as stored.
    """
    dest = staging / obj.key.replace("/", "__")
    if obj.chunked:
        try:
            return materialize(storage, obj, dest, key if obj.encrypted else None)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise staging_failure(dest, exc) from exc
            raise
    try:
        storage.get_file(obj.key, dest)
        size, digest = sha256_file(dest)
        check_digest(f"object {obj.key}", size, digest, obj.size, obj.sha256)
    except ObjectNotFound as exc:
        dest.unlink(missing_ok=True)
        raise IntegrityError(
            f"object {obj.key} listed in the manifest is missing from {storage.describe()}"
        ) from exc
    except OSError as exc:
        dest.unlink(missing_ok=True)
        if exc.errno in DISK_FULL:  # the staged copy; network errors keep their own class
            raise staging_failure(dest, exc) from exc
        raise
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def staging_failure(path: Path, exc: OSError) -> StagingError:
    """One line for a staging file that cannot be written (a full disk named as such)."""
    if exc.errno in DISK_FULL:
        return StagingError(f"staging file {path}: no space left on device")
    return StagingError(f"staging file {path}: {exc.strerror or exc}")


def whole_sealed_objects(manifest: Manifest) -> bool:
    """True when the staged objects of ``manifest`` are ciphertext (encrypted full backup).

    Encrypted chunked objects are decrypted, chunk by chunk, while they are
    staged (:func:`db_backup.chunks.reader.materialize`), so they need no decode
    layer; a manifest mixing both kinds is refused.
    """
    sealed = [o for o in manifest.objects if o.encrypted]
    whole = [o for o in sealed if o.sealed_whole]
    if whole and len(whole) != len(sealed):
        raise EncryptionError(
            f"backup {manifest.name}/{manifest.backup_id} mixes chunked and whole encrypted "
            "objects; this db-backup cannot restore it"
        )
    return bool(whole)


def authenticate_staged(key: DataKey, manifest: Manifest, staged: dict[str, Path]) -> None:
    """Decrypt every staged ciphertext object once, discarding the output: tampering
    fails here, before the connector touches the target. (Chunked objects were
    authenticated chunk by chunk while staged.)"""
    for obj in manifest.objects:
        if not obj.sealed_whole:
            continue
        with open(staged[obj.key], "rb") as fh:
            reader = key.decrypt_from(fh, f"object {obj.key}")
            while reader.read(COPY_CHUNK):
                pass


def decode_layers(obj: StoredObject, key: DataKey | None) -> list[DecodeLayer]:
    """What decodes the staged form of ``obj``: the decryption of a whole sealed object."""
    if key is None or not obj.sealed_whole:
        return []
    return [key.decode_layer(f"object {obj.key}")]


def restore_source(
    manifest: Manifest, staged: dict[str, Path], key: DataKey | None = None
) -> RestoreSource:
    """The staged, checked objects of ``manifest`` as a connector reads them.

    Whole encrypted objects are authenticated here (before any restore step) and
    decrypted again while the connector reads; ``key`` must then be given.
    """
    layers: list[DecodeLayer] = []
    if whole_sealed_objects(manifest):
        key = require_key(manifest, key, "restoring it")
        assert key is not None  # require_key raises for an encrypted backup without a key
        authenticate_staged(key, manifest, staged)
        layers = [key.decode_layer(f"an object of {manifest.name}/{manifest.backup_id}")]
    return RestoreSource(manifest=manifest, staged=staged, decode_layers=layers)
