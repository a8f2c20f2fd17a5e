"""Export: materialise a stored backup (full or incremental) as plain dump files.

Users are never locked in: the result is exactly the bytes the database tool
wrote (the sqlite3 file, the pg_dump output, ...), checked against the
manifest's raw sha256 before it is moved into place. An encrypted backup
(full or incremental) needs its unlocked data key; every byte is
authenticated before the file is moved into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from db_backup.crypto.stream import DataKey
from db_backup.errors import TargetError
from db_backup.manifest import Manifest, StoredObject
from db_backup.pipeline import copy_stream, open_decoded
from db_backup.read import decode_layers, download_verified, require_key
from db_backup.storage.base import Storage


def plain_name(obj: StoredObject) -> str:
    """The dump file's own name: the stored name without .zst / .chunks."""
    name = obj.key.rsplit("/", 1)[-1]
    for suffix in (".chunks", ".zst"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def export_backup(
    storage: Storage,
    manifest: Manifest,
    dest: Path,
    force: bool = False,
    key: DataKey | None = None,
) -> list[Path]:
    """Write the decoded dump of ``manifest`` to ``dest``; return the files written.

    One part: ``dest`` is the file. Several parts: ``dest`` is a directory that
    receives one file per part. An existing file is refused unless ``force``.
    An encrypted backup needs ``key``, its data key (PassphraseRequired otherwise).
    """
    key = require_key(manifest, key, "export")
    if len(manifest.objects) == 1:
        targets = [(manifest.objects[0], dest)]
    else:
        dest.mkdir(parents=True, exist_ok=True)
        targets = [(obj, dest / plain_name(obj)) for obj in manifest.objects]
    for _, path in targets:
        if path.exists() and not force:
            raise TargetError(f"export target {path} exists; use --force to replace it")
    for obj, path in targets:
        _export_one(storage, obj, path, key)
    return [path for _, path in targets]


def _export_one(storage: Storage, obj: StoredObject, path: Path, key: DataKey | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".db-backup-export-", dir=path.parent) as tmp:
        staged = download_verified(storage, obj, Path(tmp), key)
        # A chunked object is decrypted while staged; a whole one is decrypted here.
        layers = decode_layers(obj, key)
        partial = Path(tmp) / "out.partial"
        with (
            open_decoded(staged, obj.key, obj.raw_size, obj.raw_sha256, layers) as src,
            open(partial, "wb") as out,
        ):
            copy_stream(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
