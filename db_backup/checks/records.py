"""Check records: the results of drills and verifications, stored next to a backup.

Manifests are written once and never changed, so each check writes its own
small object::

    <name>/<backup id>/checks/<UTC time>-<kind>.json     kind: drill | verify

``list`` shows the latest drill of each backup from these records, and
retention stops counting a backup whose latest check found it damaged. Like
manifests, records are read strictly (``format_version``); a record that cannot
be read is reported, never guessed at.

``outcome`` is ``passed`` or ``failed``. Only a verdict on the backup itself is
recorded: a drill that could not even start (no scratch database, store
unreachable) writes nothing, so a broken drill set-up never marks good backups
as failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from db_backup.crypto.stream import DataKey
from db_backup.errors import EncryptionError, IntegrityError, ManifestError, StorageError
from db_backup.manifest import Manifest, backup_prefix, check_name, is_backup_id
from db_backup.operations import verify_stored
from db_backup.storage.base import ObjectInfo, Storage

FORMAT_VERSION = 1
CHECKS_DIR = "checks"
KINDS = ("drill", "verify")
_STAMP = "%Y%m%dT%H%M%S%fZ"

Kind = Literal["drill", "verify"]
SkipFn = Callable[[str, Exception], None]


class CheckRecord(BaseModel):
    """One drill or verification of one backup."""

    model_config = ConfigDict(extra="ignore")

    format_version: int = FORMAT_VERSION
    kind: Kind
    name: str
    backup_id: str
    checked_at: datetime
    outcome: Literal["passed", "failed"]
    problems: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    flow_run_id: str | None = None

    @property
    def ok(self) -> bool:
        """True when the check passed."""
        return self.outcome == "passed"


@dataclass(frozen=True)
class CheckState:
    """The latest check of each kind for one backup (None: never checked)."""

    drill: CheckRecord | None = None
    verify: CheckRecord | None = None
    unreadable: str = ""

    def latest(self) -> CheckRecord | None:
        """The most recent check of either kind."""
        found = [r for r in (self.drill, self.verify) if r is not None]
        return max(found, key=lambda r: r.checked_at) if found else None

    def failure(self) -> str:
        """Why retention must not count this backup, or '' when it may."""
        if self.unreadable:
            return f"check record unreadable ({self.unreadable})"
        latest = self.latest()
        if latest is None or latest.ok:
            return ""
        first = latest.problems[0] if latest.problems else "no detail"
        return f"last {latest.kind} failed at {_iso(latest.checked_at)}: {first}"


def check_key(name: str, backup_id: str, kind: str, at: datetime) -> str:
    """Where a check record goes; keys sort by time within a backup."""
    stamp = at.astimezone(UTC).strftime(_STAMP)
    return f"{backup_prefix(name, backup_id)}{CHECKS_DIR}/{stamp}-{kind}.json"


def record_check(storage: Storage, record: CheckRecord) -> str:
    """Write ``record`` as a new object; return its key."""
    key = check_key(record.name, record.backup_id, record.kind, record.checked_at)
    storage.put_bytes(key, (record.model_dump_json(indent=2) + "\n").encode())
    return key


def parse_check(data: bytes, where: str) -> CheckRecord:
    """Read a check record strictly; ManifestError naming ``where`` on any problem."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"check record {where} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"check record {where} has an unknown format_version")
    try:
        return CheckRecord.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"check record {where} is invalid: {exc.errors()[0]['msg']}") from exc


def _ignore(key: str, exc: Exception) -> None:
    return None


def latest_checks(
    storage: Storage, name: str | None = None, on_skip: SkipFn = _ignore
) -> dict[tuple[str, str], CheckState]:
    """The latest drill and verify record of every backup, from one listing.

    Keys are (name, backup id). Only the newest record of each kind is read.
    """
    prefix = f"{check_name(name)}/" if name else ""
    return checks_from_listing(storage, storage.list(prefix), on_skip)


def checks_from_listing(
    storage: Storage, listing: Iterable[ObjectInfo], on_skip: SkipFn = _ignore
) -> dict[tuple[str, str], CheckState]:
    """Like :func:`latest_checks`, from a listing the caller already has."""
    newest: dict[tuple[str, str, str], str] = {}
    for info in listing:
        parts = info.key.split("/")
        if len(parts) != 4 or parts[2] != CHECKS_DIR or not is_backup_id(parts[1]):
            continue
        kind = parts[3].rsplit("-", 1)[-1].removesuffix(".json")
        if kind in KINDS:
            slot = (parts[0], parts[1], kind)
            newest[slot] = max(newest.get(slot, ""), info.key)
    return _read_latest(storage, newest, on_skip)


def _read_latest(
    storage: Storage, newest: dict[tuple[str, str, str], str], on_skip: SkipFn
) -> dict[tuple[str, str], CheckState]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for (bname, bid, kind), key in sorted(newest.items()):
        slot = found.setdefault((bname, bid), {})
        try:
            slot[kind] = parse_check(storage.get_bytes(key), f"{storage.describe()}/{key}")
        except (ManifestError, StorageError) as exc:
            on_skip(key, exc)
            slot["unreadable"] = key
    return {k: CheckState(**v) for k, v in found.items()}


@dataclass
class VerifyOutcome:
    """The verification of one backup: every object re-read and checked."""

    backup_id: str
    objects: int
    stored_bytes: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every object matched its size and sha256."""
        return not self.problems


def verify_backup_objects(
    storage: Storage, manifest: Manifest, key: DataKey | None = None
) -> VerifyOutcome:
    """Re-read every object of ``manifest``; damaged or missing objects become problems.

    An encrypted incremental backup needs its data key ``key``; a chunk or index
    that fails authentication is a problem too. Anything else (the store
    unreachable, no key) raises: that is no verdict on the backup.
    """
    problems: list[str] = []
    for obj in manifest.objects:
        try:
            verify_stored(storage, obj, key)
        except IntegrityError as exc:
            problems.append(str(exc))
        except EncryptionError as exc:
            if key is None:
                raise
            problems.append(str(exc))
    return VerifyOutcome(manifest.backup_id, len(manifest.objects), manifest.stored_bytes, problems)


def verify_record(
    manifest: Manifest, outcome: VerifyOutcome, flow_run_id: str | None = None
) -> CheckRecord:
    """The check record of one verification."""
    return CheckRecord(
        kind="verify",
        name=manifest.name,
        backup_id=manifest.backup_id,
        checked_at=datetime.now(UTC),
        outcome="passed" if outcome.ok else "failed",
        problems=outcome.problems,
        details={"objects": outcome.objects, "stored_bytes": outcome.stored_bytes},
        flow_run_id=flow_run_id,
    )


def drill_fields(state: CheckState | None) -> dict[str, Any]:
    """The check fields ``list --json`` adds to each backup."""
    drill = state.drill if state else None
    verify = state.verify if state else None
    return {
        "last_drill_at": _iso(drill.checked_at) if drill else None,
        "last_drill_ok": drill.ok if drill else None,
        "last_verify_at": _iso(verify.checked_at) if verify else None,
        "last_verify_ok": verify.ok if verify else None,
    }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
