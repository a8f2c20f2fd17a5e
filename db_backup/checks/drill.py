"""Restore drills: prove a backup restores, as plain steps the drill flow wraps.

A drill reads the backup through :func:`db_backup.read.read_backup` (every
object's size and sha256 checked against the manifest, sealed objects
authenticated with the data key), restores it into a **scratch** database created for the drill
(see :mod:`db_backup.connectors.scratch`), compares the rows of every table
with the counts the manifest recorded at backup time, runs the engine's own
integrity check, drops the scratch database, and records the result next to
the backup (:mod:`db_backup.checks.records`).

A problem with the backup (altered object, failed restore, row counts that
disagree, integrity check errors) is a *failed* drill and is recorded. A
problem with the drill set-up (the scratch database cannot be created, the
store cannot be reached, an encrypted backup and no passphrase) raises before
anything is recorded and before any database is touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db_backup.checks.records import CheckRecord
from db_backup.connectors.base import Connector, RestoreRequest, RestoreSource
from db_backup.crypto.stream import DataKey
from db_backup.errors import (
    ConfigError,
    EncryptionError,
    IntegrityError,
    ManifestError,
    SourceError,
    TargetError,
)
from db_backup.manifest import Manifest
from db_backup.read import read_backup
from db_backup.storage.base import Storage

# Errors that are a verdict on the backup itself, not on the drill's set-up.
BACKUP_FAULTS = (IntegrityError, ManifestError, EncryptionError, TargetError, SourceError)


@dataclass
class DrillReport:
    """What one drill found."""

    name: str
    backup_id: str
    scratch: str
    problems: list[str] = field(default_factory=list)
    tables: dict[str, dict[str, int | None]] = field(default_factory=dict)
    check_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        """True when the backup restored, every count matched and the check passed."""
        return not self.problems

    def record(self, flow_run_id: str | None = None) -> CheckRecord:
        """The check record stored next to the backup."""
        return CheckRecord(
            kind="drill",
            name=self.name,
            backup_id=self.backup_id,
            checked_at=datetime.now(UTC),
            outcome="passed" if self.ok else "failed",
            problems=self.problems,
            details=self.details(),
            flow_run_id=flow_run_id,
        )

    def details(self) -> dict[str, Any]:
        """Counts, check output and timing, for the record and the artifact."""
        return {
            "scratch": self.scratch,
            "tables": self.tables,
            "engine_check": self.check_problems or ["ok"],
            "seconds": round(self.seconds, 3),
        }


def compare_counts(expected: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Problems, one per table whose restored rows differ from the manifest's count."""
    problems: list[str] = []
    for table in sorted(set(expected) | set(restored)):
        want, got = expected.get(table), restored.get(table)
        if want is None:
            problems.append(f"table {table} was restored but the manifest does not list it")
        elif got is None:
            problems.append(f"table {table} ({want} rows in the manifest) is missing after restore")
        elif want != got:
            problems.append(f"table {table}: {got} rows restored, the manifest says {want}")
    return problems


def count_table(
    expected: dict[str, int], restored: dict[str, int]
) -> dict[str, dict[str, int | None]]:
    """Per table: rows the manifest recorded and rows the restore produced."""
    return {
        t: {"manifest": expected.get(t), "restored": restored.get(t)}
        for t in sorted(set(expected) | set(restored))
    }


def restore_and_inspect(source: RestoreSource, scratch: Connector, report: DrillReport) -> None:
    """Restore into the scratch database, run the engine's check, then compare counts.

    The drill runs the check itself, so connectors may skip their own post-restore
    check (``skip_integrity_check``) instead of reading everything twice.
    """
    request = RestoreRequest(options={"skip_integrity_check": True})
    manifest = source.manifest
    scratch.restore(source, request)
    report.check_problems = scratch.check()
    report.problems.extend(f"engine check: {p}" for p in report.check_problems[:20])
    try:
        restored = scratch.row_counts()
    except Exception as exc:  # a damaged database may not even be countable
        if not report.check_problems:
            raise
        report.problems.append(f"row counts could not be read: {exc}")
        return
    report.tables = count_table(manifest.tables, restored)
    report.problems.extend(compare_counts(manifest.tables, restored))


def run_drill(
    storage: Storage,
    manifest: Manifest,
    scratch: Connector,
    staging: Path,
    key: DataKey | None = None,
) -> DrillReport:
    """Drill ``manifest`` into ``scratch``; backup faults become report problems.

    An encrypted backup needs ``key``, its data key: without it PassphraseRequired
    (a ConfigError) is raised, and no verdict on the backup is made. Does not drop
    ``scratch``: the caller owns it and drops it whatever happens.
    """
    report = DrillReport(manifest.name, manifest.backup_id, scratch.describe())
    start = time.monotonic()
    try:
        source = read_backup(storage, manifest, staging, key, "the drill")
        restore_and_inspect(source, scratch, report)
    except ConfigError:
        raise  # the set-up (no passphrase, ...), not the backup: no verdict
    except BACKUP_FAULTS as exc:
        report.problems.append(str(exc))
    finally:
        report.seconds = time.monotonic() - start
    return report


def summary_line(report: DrillReport) -> str:
    """One line for logs and the CLI."""
    where = f"{report.name}/{report.backup_id}"
    if report.ok:
        rows = sum(t["restored"] or 0 for t in report.tables.values())
        return (
            f"drill passed for {where}: {len(report.tables)} table(s), {rows} row(s) match the "
            f"manifest, engine check ok ({report.seconds:.1f} s)"
        )
    more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
    return f"drill FAILED for {where}: {report.problems[0]}{more}"
