"""The backup manifest: the only proof that a backup exists.

A backup is stored under ``<name>/<backup id>/``: one object per dump part,
then ``manifest.json``, written last. Listing reads manifests only, so data
without a manifest (an interrupted backup) is never shown as a backup.

The manifest carries ``format_version``; :func:`parse_manifest` refuses any
version it does not know instead of guessing. Full backups write version 1;
incremental backups (whose objects are chunk indexes, encoding ``chunked``)
write version 2, so a db-backup that predates the chunk store refuses them
with "upgrade" instead of restoring an index as if it were a dump.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from db_backup.crypto.stream import ALGORITHM
from db_backup.errors import ManifestError

CHUNKED = "chunked"  # encoding of an incremental backup's object: an index of chunks

FORMAT_VERSION = 1
INCREMENTAL_FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (FORMAT_VERSION, INCREMENTAL_FORMAT_VERSION)
MANIFEST_NAME = "manifest.json"
ID_FORMAT = "%Y%m%dT%H%M%SZ"
_ID_RE = re.compile(r"^\d{8}T\d{6}Z$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class StoredObject(BaseModel):
    """One object of a backup as it sits in the store."""

    model_config = ConfigDict(extra="ignore")

    key: str = Field(description="Full key in the store, e.g. 'shop/20260115T020000Z/db.zst'.")
    part: str = Field(description="What the object holds, e.g. 'database' or 'table:orders'.")
    format: str = Field(
        description="Format of the decoded bytes, e.g. 'sqlite3', 'pg_dump-custom'."
    )
    encoding: list[str] = Field(
        default_factory=lambda: ["zstd"],
        description="Encodings applied in order when writing (decode in reverse).",
    )
    size: int = Field(description="Stored size in bytes.")
    sha256: str = Field(description="sha256 of the stored bytes.")
    raw_size: int = Field(description="Size of the decoded dump in bytes.")
    raw_sha256: str = Field(description="sha256 of the decoded dump.")
    store_check: str | None = Field(
        default=None,
        description="What the store confirmed on upload, e.g. 's3:sha256' or 'gcs:md5+crc32c' "
        "(absent for local directories and for manifests written before it existed).",
    )

    @property
    def chunked(self) -> bool:
        """True when the object is an index of chunks (incremental), not a whole dump."""
        return CHUNKED in self.encoding

    @property
    def encrypted(self) -> bool:
        """True when the object (for a chunked one: its index and chunks) is sealed."""
        return ALGORITHM in self.encoding

    @property
    def sealed_whole(self) -> bool:
        """True for an encrypted whole object: staged as ciphertext, decrypted on reading."""
        return self.encrypted and not self.chunked


class Manifest(BaseModel):
    """Everything a restore, a verify, a prune and ``list`` need to know."""

    model_config = ConfigDict(extra="ignore")

    format_version: int = FORMAT_VERSION
    backup_id: str
    name: str
    engine: str
    mode: str = "full"
    source: str = Field(description="Where the data came from, never with a password.")
    server_version: str = ""
    tool: str = ""
    tool_version: str = ""
    started_at: datetime
    finished_at: datetime
    compression: dict[str, Any] = Field(default_factory=dict)
    encryption: dict[str, Any] | None = None
    objects: list[StoredObject] = Field(default_factory=list)
    tables: dict[str, int] = Field(default_factory=dict, description="Rows per table.")
    consistency: str = ""
    flow_run_id: str | None = None
    logical_bytes: int = 0
    stored_bytes: int = 0
    uploaded_bytes: int = 0
    deduplicated_bytes: int = Field(
        default=0, description="Raw dump bytes found already stored (incremental backups)."
    )
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def created_at(self) -> datetime:
        """When the snapshot was started (UTC)."""
        return self.started_at

    def to_json(self) -> bytes:
        """Serialise to UTF-8 JSON, stable key order, UTC timestamps."""
        return (self.model_dump_json(indent=2) + "\n").encode()

    def summary(self) -> dict[str, Any]:
        """The record ``db-backup list --json`` prints for this backup."""
        digest = self.objects[0].sha256 if len(self.objects) == 1 else _combined(self)
        return {
            "id": self.backup_id,
            "name": self.name,
            "engine": self.engine,
            "mode": self.mode,
            "created_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "size_bytes": self.stored_bytes,
            "logical_bytes": self.logical_bytes,
            "uploaded_bytes": self.uploaded_bytes,
            "deduplicated_bytes": self.deduplicated_bytes,
            "sha256": digest,
            "objects": len(self.objects),
            "tables": len(self.tables),
            "encrypted": self.encryption is not None,
            "damaged": bool(self.extra.get("damaged")),
            "server_version": self.server_version,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _combined(manifest: Manifest) -> str:
    """A digest over all objects' digests, for multi-object backups."""
    import hashlib

    h = hashlib.sha256()
    for obj in manifest.objects:
        h.update(f"{obj.key}:{obj.sha256}\n".encode())
    return h.hexdigest()


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Read a manifest strictly; raise ManifestError naming ``where`` on any problem."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest {where} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {where} is not a JSON object")
    version = raw.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise ManifestError(
            f"manifest {where} has format_version {version!r}; this db-backup reads "
            f"versions {', '.join(map(str, SUPPORTED_VERSIONS))} only "
            "(upgrade db-backup to read it)"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"manifest {where} is invalid at {loc}: {first['msg']}") from exc


def new_backup_id(now: datetime | None = None) -> str:
    """A sortable UTC id such as ``20260115T020000Z``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(ID_FORMAT)


def next_backup_id(backup_id: str) -> str:
    """The id one second later: used when an id is already taken."""
    when = datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=UTC)
    return new_backup_id(when + timedelta(seconds=1))


def is_backup_id(value: str) -> bool:
    """True for strings shaped like a backup id."""
    return bool(_ID_RE.match(value))


def parse_backup_id(value: str) -> datetime:
    """The UTC time encoded in a backup id."""
    return datetime.strptime(value, ID_FORMAT).replace(tzinfo=UTC)


def check_name(name: str) -> str:
    """Validate a backup name (a path segment in every store); ConfigError showing it escaped.

    The whole name must match (``fullmatch``: ``$`` alone would let a trailing
    newline through, which breaks ``list``); control characters never pass.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        from db_backup.errors import ConfigError

        raise ConfigError(
            f"backup name {name!r} is invalid: use letters, digits, '.', '_' or '-' "
            "(at most 128, not starting with a punctuation mark)"
        )
    return name


def backup_prefix(name: str, backup_id: str) -> str:
    """The key prefix under which one backup's objects live."""
    return f"{name}/{backup_id}/"


def manifest_key(name: str, backup_id: str) -> str:
    """The key of one backup's manifest."""
    return f"{backup_prefix(name, backup_id)}{MANIFEST_NAME}"
