"""SQLite: consistent snapshots through the online backup API.

The snapshot is taken in one backup step, so it is the database as of one
read transaction even while other processes keep writing (WAL databases keep
accepting writes; rollback-journal writers wait for the copy, up to their busy
timeout). Row counts are read from the snapshot itself, so they are exactly
the rows the backup holds.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from db_backup import leftovers
from db_backup.connectors.base import DumpResult, RestoreRequest, RestoreResult, RestoreSource
from db_backup.errors import ConfigError, IntegrityError, SourceError, StagingError, TargetError
from db_backup.manifest import Manifest
from db_backup.pipeline import COPY_CHUNK, DumpSink, copy_stream

HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")
# RestoreRequest option: the caller runs check() itself (drills), so skip the copy's check.
SKIP_CHECK_OPTION = "skip_integrity_check"


class SqliteConnector:
    """A SQLite database file."""

    engine = "sqlite"
    compress_threads = -1  # a file source leaves the cores to zstd

    def __init__(self, path: str | Path, busy_timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.busy_timeout = busy_timeout

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
        try:
            self._snapshot(snapshot)
            tables = _row_counts(snapshot)
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
            extra={"journal_mode": self._journal_mode()},
        )

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
        try:
            with source.open(obj) as stream, open(tmp, "wb") as out:
                copy_stream(stream, out)
                out.flush()
                os.fsync(out.fileno())
            if not request.options.get(SKIP_CHECK_OPTION):
                _require_healthy(tmp, f"restored copy of {obj.key}")
            if request.tables is None:
                self._replace_with(tmp)
                return RestoreResult(str(self.path), sorted(source.manifest.tables))
            self._copy_tables(tmp, request.tables)
            return RestoreResult(str(self.path), list(request.tables))
        finally:
            for suffix in ("", *SIDE_FILES):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

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
        existing = self._existing_tables() or {}
        clash = [t for t in tables if t in existing]
        if clash and not force:
            raise TargetError(
                f"restore target {self.path} already has table(s) {', '.join(clash)}; "
                "use --force to replace them"
            )

    def _replace_with(self, tmp: Path) -> None:
        # A stale WAL next to the new file would be replayed into it: remove first.
        for suffix in SIDE_FILES:
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, self.path)

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
            raise TargetError(f"restore into {self.path} failed: {exc}") from exc
        finally:
            conn.close()
        _require_healthy(self.path, f"restore target {self.path}")

    # -- inspection --------------------------------------------------------
    def row_counts(self) -> dict[str, int]:
        self.ping()
        return _row_counts(self.path)

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
        return SqliteConnector(path, busy_timeout=self.busy_timeout)

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


def _row_counts(path: Path) -> dict[str, int]:
    with _readonly(path) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            n: conn.execute(f"SELECT count(*) FROM {_quote_ident(n)}").fetchone()[0] for n in names
        }


def _integrity_problems(path: Path) -> list[str]:
    try:
        with _readonly(path) as conn:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def _require_healthy(path: Path, what: str) -> None:
    problems = _integrity_problems(path)
    if problems:
        raise IntegrityError(f"{what} fails PRAGMA integrity_check: {problems[0]}")


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
