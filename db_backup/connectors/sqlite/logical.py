"""SQLite: consistent snapshots through the online backup API.

The snapshot is taken in one backup step, so it is the database as of one
read transaction even while other processes keep writing (WAL databases keep
accepting writes; rollback-journal writers wait for the copy, up to their busy
timeout). Row counts are read from the snapshot itself, so they are exactly
the rows the backup holds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from db_backup import leftovers
from db_backup.connectors.base import DumpResult, RestoreRequest, RestoreResult, RestoreSource
from db_backup.errors import ConfigError, IntegrityError, SourceError, StagingError, TargetError
from db_backup.manifest import Manifest, StoredObject
from db_backup.pipeline import COPY_CHUNK, DumpSink, copy_stream

HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")
# RestoreRequest option: the caller runs check() itself (drills), so skip the copy's check.
SKIP_CHECK_OPTION = "skip_integrity_check"
# Manifest ``extra`` key of a backup taken of a database that failed its quick_check.
DAMAGED_KEY = "damaged"
# SQLite's own tables: the exact, case-sensitive prefix (LIKE would ignore case and read
# '_' as a wildcard, hiding user tables such as 'SqliteOrders' or 'sqlite1').
INTERNAL_PREFIX = "sqlite_"

log = logging.getLogger(__name__)


class SqliteConnector:
    """A SQLite database file."""

    engine = "sqlite"
    compress_threads = -1  # a file source leaves the cores to zstd

    def __init__(self, path: str | Path, busy_timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.busy_timeout = busy_timeout
        # True for a scratch file this process created (drills): nobody else can hold it
        # open, so a restore may rename over it instead of writing it in place.
        self.private = False

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    # -- source side -------------------------------------------------------
    def ping(self) -> None:
        """Raise SourceError unless ``path`` is a readable SQLite database."""
        if not self.path.exists():
            raise SourceError(f"SQLite database {self.path} does not exist")
        if not self.path.is_file():
            raise SourceError(f"SQLite database {self.path} is not a regular file")
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(len(HEADER))
        except OSError as exc:
            raise SourceError(
                f"SQLite database {self.path} cannot be read: {exc.strerror}"
            ) from exc
        if header != HEADER:
            raise SourceError(f"{self.path} is not a SQLite database (bad file header)")

    def dump(self, sink: DumpSink) -> DumpResult:
        """Snapshot with the backup API, then stream the snapshot into ``sink``."""
        self.ping()
        snapshot = sink.staging / f"snapshot-{uuid.uuid4().hex[:8]}.sqlite3"
        extra: dict[str, object] = {}
        try:
            self._snapshot(snapshot)
            damage = _problems(snapshot, "quick_check")
            if damage:
                extra[DAMAGED_KEY] = self._accept_damage(damage, sink)
            tables = self._snapshot_counts(snapshot, lenient=bool(damage))
            part = f"{_stem(self.path)}.sqlite3"
            with sink.open("database", part, "sqlite3") as out, open(snapshot, "rb") as src:
                copy_stream(src, out, COPY_CHUNK)
        finally:
            for suffix in ("", *SIDE_FILES):
                Path(f"{snapshot}{suffix}").unlink(missing_ok=True)
        return DumpResult(
            server_version=sqlite3.sqlite_version,
            tool="sqlite3-backup-api",
            tool_version=sqlite3.sqlite_version,
            tables=tables,
            consistency="snapshot: one read transaction (SQLite online backup API, single step)",
            extra={"journal_mode": self._journal_mode(), **extra},
        )

    def _accept_damage(self, damage: list[str], sink: DumpSink) -> str:
        """The damage note for the manifest, or SourceError unless the caller allows it."""
        note = f"PRAGMA quick_check: {_summary(damage)}"
        if not sink.allow_damaged:
            raise SourceError(
                f"SQLite database {self.path} is damaged ({note}); repair it, or pass "
                "--allow-damaged (allow_damaged=True) to back it up as it is"
            )
        log.warning("backing up damaged SQLite database %s as it is (%s)", self.path, note)
        return note

    def _snapshot_counts(self, snapshot: Path, lenient: bool) -> dict[str, int]:
        """Rows per table of the snapshot; SourceError when it cannot be read.

        ``lenient`` (a damaged database the user chose to back up): tables whose
        rows cannot be counted are left out of the counts instead of failing.
        """
        try:
            return _row_counts(snapshot, lenient=lenient)
        except sqlite3.DatabaseError as exc:
            raise SourceError(f"SQLite database {self.path} cannot be read: {exc}") from exc

    def _snapshot(self, dest: Path) -> None:
        try:
            src = self._connect(self.path, "rw")
            try:
                dst = sqlite3.connect(dest)
                try:
                    src.backup(dst, pages=-1)
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StagingError(
                    f"staging file {dest}: No space left on device (the snapshot needs room "
                    f"for the whole database; set DB_BACKUP_STAGING to a larger disk)"
                ) from exc
            raise SourceError(f"SQLite database {self.path} cannot be backed up: {exc}") from exc

    def _journal_mode(self) -> str:
        try:
            with contextlib.closing(self._connect(self.path, "ro")) as conn:
                return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        except sqlite3.DatabaseError:
            return "unknown"

    def _connect(self, path: Path, mode: str) -> sqlite3.Connection:
        uri = f"file:{quote(str(path))}?mode={mode}"
        return sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)

    # -- target side -------------------------------------------------------
    def check_target(self, manifest: Manifest, request: RestoreRequest) -> None:
        """Refuse, before any download, a restore that would clobber data or cannot work."""
        if request.tables is None:
            self._refuse_if_holds_data(request.force)
        else:
            _check_tables(request.tables, manifest)
            self._refuse_table_conflicts(request.tables, request.force)

    def restore(self, source: RestoreSource, request: RestoreRequest) -> RestoreResult:
        """Restore the whole file atomically, or copy chosen tables into the target."""
        obj = source.part("database")
        self.check_target(source.manifest, request)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Named with this process and the time: a killed restore's file is swept next time.
        leftovers.sweep(leftovers.find_restore_files(self.path.parent, self.path.name))
        tmp = self.path.with_name(leftovers.restore_file_name(self.path.name))
        damaged = source.manifest.extra.get(DAMAGED_KEY)
        try:
            self._write_copy(source, obj, tmp)
            if damaged:
                log.warning(
                    "backup %s/%s was taken of a damaged database (%s): restoring it as it is",
                    source.manifest.name,
                    source.manifest.backup_id,
                    damaged,
                )
            elif not request.options.get(SKIP_CHECK_OPTION):
                _require_healthy(tmp, f"restored copy of {obj.key}")
            if request.tables is None:
                self._replace_with(tmp)
                return RestoreResult(str(self.path), sorted(source.manifest.tables))
            self._copy_tables(tmp, request.tables)
            return RestoreResult(str(self.path), list(request.tables))
        finally:
            for suffix in ("", *SIDE_FILES):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    def _write_copy(self, source: RestoreSource, obj: StoredObject, tmp: Path) -> None:
        """Decode ``obj`` into ``tmp`` beside the target; TargetError when it cannot be written."""
        try:
            with source.open(obj) as stream, open(tmp, "wb") as out:
                copy_stream(stream, out)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TargetError(
                    f"restore target {self.path}: no space left on device for the restored copy"
                ) from exc
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise TargetError(
                    f"restore target {self.path} cannot be written: {exc.strerror or exc}"
                ) from exc
            raise

    def _existing_tables(self) -> dict[str, int] | None:
        """Rows per table of the target, or None when there is no target yet."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        try:
            return _row_counts(self.path)
        except sqlite3.DatabaseError as exc:
            raise TargetError(
                f"restore target {self.path} exists and is not a SQLite database ({exc}); "
                "remove it or choose another path"
            ) from exc

    def _refuse_if_holds_data(self, force: bool) -> None:
        existing = self._existing_tables()
        if existing and not force:
            raise TargetError(
                f"restore target {self.path} already holds {len(existing)} table(s); "
                "use --force to replace it"
            )

    def _refuse_table_conflicts(self, tables: list[str], force: bool) -> None:
        existing = {_fold(t) for t in self._existing_tables() or {}}
        clash = [t for t in tables if _fold(t) in existing]
        if clash and not force:
            raise TargetError(
                f"restore target {self.path} already has table(s) {', '.join(clash)}; "
                "use --force to replace them"
            )

    def _replace_with(self, tmp: Path) -> None:
        """Make the target hold exactly ``tmp``'s data, atomically.

        A new target (or a private drill scratch file) is the renamed file. An
        existing one is overwritten in place through SQLite (backup API, one write
        transaction under the target's own locks): a rename would leave connections that other
        processes hold open writing into the old, unlinked file, losing every
        commit they make after the restore. Here they see the restored data
        and their later commits land in it. TargetError, with the target
        unchanged, when another connection keeps it locked past the busy timeout.
        """
        if self.private or not self.path.exists():
            # A stale WAL next to the new file would be replayed into it: remove first.
            for suffix in SIDE_FILES:
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, self.path)
            return
        self._overwrite_in_place(tmp)

    def _overwrite_in_place(self, tmp: Path) -> None:
        deadline = time.monotonic() + self.busy_timeout

        def give_up_when_locked(status: int, remaining: int, total: int) -> None:
            busy = status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if busy and time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked")

        try:
            dst = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            try:
                _match_page_size(tmp, dst)
                with contextlib.closing(sqlite3.connect(tmp)) as src:
                    src.backup(dst, pages=-1, progress=give_up_when_locked, sleep=0.05)
                with contextlib.suppress(sqlite3.DatabaseError):
                    dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                dst.close()
        except sqlite3.DatabaseError as exc:
            raise TargetError(_target_failure(self.path, exc)) from exc

    def _copy_tables(self, restored: Path, tables: list[str]) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute("ATTACH DATABASE ? AS src", (str(restored),))
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in tables:
                    _copy_table(conn, table)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("DETACH DATABASE src")
        except sqlite3.DatabaseError as exc:
            raise TargetError(_target_failure(self.path, exc)) from exc
        finally:
            conn.close()
        _require_healthy(self.path, f"restore target {self.path}")

    # -- inspection --------------------------------------------------------
    def row_counts(self) -> dict[str, int]:
        self.ping()
        try:
            return _row_counts(self.path)
        except sqlite3.DatabaseError as exc:
            raise SourceError(f"SQLite database {self.path} cannot be read: {exc}") from exc

    def check(self) -> list[str]:
        return _integrity_problems(self.path)

    def scratch_target(self, label: str) -> SqliteConnector:
        """A new, empty SQLite file for a drill, in this path's directory (or in it, if a dir).

        Created with O_EXCL under a name that cannot be an existing file, so a
        drill never opens a real database; TargetError when the directory
        cannot hold it.
        """
        folder = self.path if self.path.is_dir() else self.path.parent
        try:
            fd, path = tempfile.mkstemp(
                prefix=f".db-backup-drill-{label}-", suffix=".sqlite3", dir=folder
            )
        except OSError as exc:
            raise TargetError(
                f"cannot create a scratch SQLite database in {folder}: {exc.strerror or exc}"
            ) from exc
        os.close(fd)
        scratch = SqliteConnector(path, busy_timeout=self.busy_timeout)
        scratch.private = True
        return scratch

    def drop(self) -> None:
        for suffix in ("", *SIDE_FILES):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".sqlite3", ".sqlite", ".db"):
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=60)
    try:
        yield conn
    finally:
        conn.close()


def is_internal(name: str) -> bool:
    """True for SQLite's own tables (``sqlite_sequence``, ``sqlite_stat1``, ...) only."""
    return name.startswith(INTERNAL_PREFIX)


def _fold(name: str) -> str:
    """A table name as SQLite compares it: case-insensitive for ASCII letters only."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _row_counts(path: Path, lenient: bool = False) -> dict[str, int]:
    """Rows per user table; with ``lenient``, tables that cannot be read are left out."""
    with _readonly(path) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            if not is_internal(r[0])
        ]
        counts: dict[str, int] = {}
        for n in names:
            try:
                counts[n] = conn.execute(f"SELECT count(*) FROM {_quote_ident(n)}").fetchone()[0]
            except sqlite3.DatabaseError:
                if not lenient:
                    raise
        return counts


def _problems(path: Path, pragma: str) -> list[str]:
    """What ``PRAGMA integrity_check`` / ``quick_check`` reports (empty when healthy)."""
    try:
        with _readonly(path) as conn:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def _summary(problems: list[str], limit: int = 3) -> str:
    """The engine's first few complaints on one line."""
    lines = [
        line.strip()
        for text in problems
        for line in text.splitlines()
        if line.strip() and not line.startswith("*** in database")
    ]
    more = f" (+{len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def _integrity_problems(path: Path) -> list[str]:
    return _problems(path, "integrity_check")


def _match_page_size(tmp: Path, dst: sqlite3.Connection) -> None:
    """Give ``tmp`` the target's page size when the target is in WAL mode.

    The backup API cannot change a WAL database's page size, so the restored
    copy is rewritten (VACUUM) with the target's instead.
    """
    mode = str(dst.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    size = int(dst.execute("PRAGMA page_size").fetchone()[0])
    with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
        if mode != "wal" or int(conn.execute("PRAGMA page_size").fetchone()[0]) == size:
            return
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA page_size={size}")
        conn.execute("VACUUM")


def _target_failure(path: Path, exc: sqlite3.DatabaseError) -> str:
    """One line for a failed write into a restore target."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return f"restore target {path}: no space left on device ({exc})"
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc):
        return (
            f"restore target {path} is in use: another connection holds a lock ({exc}); "
            "nothing was changed, stop its writers and retry"
        )
    return f"restore into {path} failed: {exc}"


def _require_healthy(path: Path, what: str) -> None:
    problems = _integrity_problems(path)
    if problems:
        raise IntegrityError(f"{what} fails PRAGMA integrity_check: {_summary(problems)}")


def _check_tables(tables: list[str], manifest: Manifest) -> None:
    missing = [t for t in tables if t not in manifest.tables]
    if missing:
        raise ConfigError(
            f"table(s) {', '.join(missing)} not in backup {manifest.name}/"
            f"{manifest.backup_id} (it has: {', '.join(sorted(manifest.tables))})"
        )


def _copy_table(conn: sqlite3.Connection, table: str) -> None:
    """Copy one table with its indexes and triggers from ``src`` into ``main``."""
    q = _quote_ident(table)
    create = conn.execute(
        "SELECT sql FROM src.sqlite_master WHERE type='table' AND name=?", (table,)
    ).fetchone()
    conn.execute(f"DROP TABLE IF EXISTS main.{q}")
    conn.execute(create[0])
    cols = [
        _quote_ident(r[1])
        for r in conn.execute(f"PRAGMA src.table_xinfo({q})")
        if r[6] == 0  # hidden=0: skip generated and hidden columns
    ]
    col_list = ", ".join(cols)
    conn.execute(f"INSERT INTO main.{q} ({col_list}) SELECT {col_list} FROM src.{q}")
    extras = conn.execute(
        "SELECT sql FROM src.sqlite_master WHERE tbl_name=? AND type IN ('index','trigger') "
        "AND sql IS NOT NULL ORDER BY type, name",
        (table,),
    ).fetchall()
    for (sql,) in extras:
        conn.execute(sql)
    _copy_sequence(conn, table)


def _copy_sequence(conn: sqlite3.Connection, table: str) -> None:
    has_seq = conn.execute(
        "SELECT 1 FROM src.sqlite_master WHERE name='sqlite_sequence'"
    ).fetchone()
    if not has_seq:
        return
    row = conn.execute("SELECT seq FROM src.sqlite_sequence WHERE name=?", (table,)).fetchone()
    if row is not None:
        conn.execute("DELETE FROM main.sqlite_sequence WHERE name=?", (table,))
        conn.execute("INSERT INTO main.sqlite_sequence(name, seq) VALUES (?, ?)", (table, row[0]))
