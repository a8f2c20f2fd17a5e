"""PostgreSQL through pg_dump / pg_restore, in custom format.

Dump: one REPEATABLE READ transaction exports a snapshot; ``pg_dump -Fc -Z0
--snapshot=...`` dumps exactly that snapshot while the same transaction
counts every table's rows, so the manifest's counts are the rows the archive
holds. pg_dump's own compression is off: our zstd stage is 4-5x faster.

Restore: ``pg_restore`` into the same or another database (created when
missing, dropped again if the restore fails), in one transaction
(``--single-transaction --exit-on-error``), so a failed restore leaves an
existing target as it was. ``jobs > 1`` trades that atomicity for speed: the
archive is decoded to a file in staging (pg_restore -j needs a seekable file).

Passwords: the block's, else ``$DB_BACKUP_PG_PASSWORD``, else ``$PGPASSWORD``
(else libpq's ~/.pgpass). They reach pg_dump/pg_restore/psql only through a
0600 in-memory passfile (PGPASSFILE=/dev/fd/N) whose one line names this
host, port, database and user; never argv, never a URL.

Database names are names, never connection strings: the tools get them as a
quoted ``dbname='...'`` conninfo (or PGDATABASE), so ``dbname=x host=elsewhere``
is the literal name of a database on this server.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from db_backup import leftovers
from db_backup.connectors import _proc
from db_backup.connectors._proc import Secret
from db_backup.connectors.base import DumpResult, RestoreRequest, RestoreResult, RestoreSource
from db_backup.connectors.postgres import catalog
from db_backup.connectors.postgres import toc as pg_toc
from db_backup.errors import (
    ConfigError,
    IntegrityError,
    SourceError,
    TargetError,
    ToolFailed,
    TransientSourceError,
)
from db_backup.manifest import Manifest
from db_backup.parsing import refuse_url_secrets
from db_backup.pipeline import DumpSink, copy_stream

PASSWORD_ENVS = ("DB_BACKUP_PG_PASSWORD", "PGPASSWORD")
SSL_PARAMS = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
}
MAINTENANCE_DB = "postgres"
TOOL_APPNAME = "db-backup-tool"  # pg_dump / pg_restore sessions, told apart from ours
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names


def from_url(url: str, **options: Any) -> PostgresConnector:
    """A connector for ``postgresql://user@host:port/db?sslmode=...``; no password allowed."""
    refuse_url_secrets(url, hint="set DB_BACKUP_PG_PASSWORD or use a postgres-database block")
    parts = urlsplit(url)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(f"PostgreSQL URL {url} names no database (postgresql://host/DB)")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - set(SSL_PARAMS) - {"globals", "connect_timeout"}
    if unknown:
        raise ConfigError(f"unknown PostgreSQL URL option(s) {', '.join(sorted(unknown))}")
    timeout = query.get("connect_timeout", "10")
    if not timeout.isdigit():
        raise ConfigError(f"PostgreSQL URL option connect_timeout={timeout!r} is not a number")
    return PostgresConnector(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username) if parts.username else None,
        database=database,
        ssl={k: v for k, v in query.items() if k in SSL_PARAMS},
        include_globals=query.get("globals", "").lower() in ("1", "true", "yes"),
        connect_timeout=int(timeout),
        **options,
    )


def check_database_name(name: str) -> str:
    """``name`` if PostgreSQL can hold it literally; ConfigError otherwise.

    '=' and spaces are legal and kept as they are; control characters and
    names longer than 63 bytes (which the server would silently truncate,
    so the backup would land in another database) are refused.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"PostgreSQL database name {name!r} contains control characters")
    if not name or len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(
            f"PostgreSQL database name {name!r} must be 1 to {MAX_NAME_BYTES} bytes long"
        )
    return name


class PostgresConnector:
    """One PostgreSQL database, reached over TCP or a Unix socket directory."""

    engine = "postgres"
    compress_threads = 0  # the server shares this host: leave it a core

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5432,
        user: str | None = None,
        database: str,
        password: str | None = None,
        ssl: dict[str, str] | None = None,
        include_globals: bool = False,
        connect_timeout: int = 10,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user or os.environ.get("USER") or "postgres"
        self.database = check_database_name(database)
        self.ssl = dict(ssl or {})
        self.include_globals = include_globals
        self.connect_timeout = connect_timeout
        self._password = Secret(password or _proc.env_password(PASSWORD_ENVS))

    def __repr__(self) -> str:
        return f"PostgresConnector({self.describe()!r})"

    def describe(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    # -- connections ---------------------------------------------------------
    def _connect(self, dbname: str | None = None, error: type[Exception] = SourceError) -> Any:
        import psycopg

        db = dbname or self.database
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": db,
            "connect_timeout": self.connect_timeout,
            "application_name": "db-backup",
            **self.ssl,
        }
        if self._password:
            kwargs["password"] = self._password.reveal()
        try:
            # autocommit: our explicit BEGIN must open the transaction, or its isolation
            # level would be ignored inside psycopg's implicit one.
            return psycopg.connect(autocommit=True, **kwargs)
        except psycopg.Error as exc:
            first = _first_line(exc)
            if error is SourceError and _proc.transient_text(str(exc)):
                error = TransientSourceError
            raise error(
                f"cannot connect to PostgreSQL database {db!r} at {self.host}:{self.port} "
                f"as {self.user}: {first}"
            ) from None

    @contextlib.contextmanager
    def _tool_env(self, dbname: str | None = None) -> Iterator[dict[str, str]]:
        """Allow-listed environment for a child tool: connection settings, and the
        password in an in-memory 0600 passfile valid for this host, port, database
        and user only."""
        db = dbname or self.database
        env = _proc.child_env(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGDATABASE=db,
            PGCONNECT_TIMEOUT=str(self.connect_timeout),
            PGAPPNAME=TOOL_APPNAME,
        )
        env.update({SSL_PARAMS[k]: v for k, v in self.ssl.items()})
        secret = self._password.reveal()
        if secret is None:
            yield env
            return
        fields = [self.host, str(self.port), db, self.user, secret]
        with _proc.secret_path(":".join(_pgpass_escape(f) for f in fields) + "\n") as path:
            env["PGPASSFILE"] = path
            yield env

    def ping(self) -> None:
        """Raise SourceError unless the database accepts a connection and a query."""
        with contextlib.closing(self._connect()) as conn:
            conn.execute("SELECT 1")

    # -- dump ----------------------------------------------------------------
    def dump(self, sink: DumpSink) -> DumpResult:
        """Dump one snapshot with pg_dump -Fc -Z0; count rows in that same snapshot."""
        pg_dump = _proc.find_tool(["pg_dump"], "PostgreSQL")
        tool_version = _proc.tool_version(pg_dump)
        conn = self._connect()
        try:
            server_version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
            check_versions(tool_version, server_version, self.database)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            # One core for counting: parallel workers would take the core pg_dump needs.
            conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            tables = catalog.list_tables(conn)
            self._require_select(conn)
            objects = catalog.object_owners(conn)
            counter = _proc.RowCounter("pg-row-counts", conn, tables, catalog.count_rows)
            counter.start()
            try:
                self._run_pg_dump(pg_dump, snapshot, sink)
            except ToolFailed:
                # A counting failure aborts the snapshot's transaction, and pg_dump then only
                # says "could not import the requested snapshot": report the real cause.
                counter.join()
                counter.result()
                raise
            finally:
                counter.join()
            if self.include_globals:
                self._dump_globals(sink)
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        return DumpResult(
            server_version=server_version,
            tool="pg_dump",
            tool_version=tool_version,
            tables=counter.result(),
            consistency=(
                "snapshot: pg_dump --snapshot of an exported REPEATABLE READ snapshot; "
                "row counts read in that same transaction"
            ),
            extra={"database": self.database, "pg_objects": objects, "format": "custom"},
        )

    def _require_select(self, conn: Any) -> None:
        """SourceError naming the first table or sequence the user may not read."""
        row = conn.execute(
            f"""
            SELECT n.nspname || '.' || c.relname,
                   CASE c.relkind WHEN 'S' THEN 'sequence' ELSE 'table' END
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname NOT IN {catalog.SYSTEM_SCHEMAS}
               AND n.nspname NOT LIKE 'pg\\_%'
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
               AND NOT has_table_privilege(c.oid, 'SELECT')
             ORDER BY 1 LIMIT 1
            """
        ).fetchone()
        if row:
            raise SourceError(
                f"permission denied for {row[1]} {row[0]} in database {self.database!r}: "
                f"user {self.user} needs SELECT on it to back the database up"
            )

    def _run_pg_dump(self, pg_dump: str, snapshot: str, sink: DumpSink) -> None:
        argv = [pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot}", "-w"]
        with (
            self._tool_env() as env,
            sink.open("database", f"{_safe_file(self.database)}.pgdump", "pg_dump-custom") as out,
        ):
            _proc.stream_out(argv, env, f"database {self.database!r}", out)

    def _dump_globals(self, sink: DumpSink) -> None:
        tool = _proc.find_tool(["pg_dumpall"], "PostgreSQL")
        argv = [tool, "--globals-only", "-w"]
        with (
            self._tool_env(MAINTENANCE_DB) as env,
            sink.open("globals", "globals.sql", "sql") as out,
        ):
            env["PGDATABASE"] = MAINTENANCE_DB
            _proc.stream_out(argv, env, f"globals of {self.host}:{self.port}", out)

    # -- restore -------------------------------------------------------------
    def check_target(self, manifest: Manifest, request: RestoreRequest) -> None:
        """Refuse, before any download, a restore that would clobber data or cannot work."""
        _require_engine(manifest, "postgres")
        _proc.find_tool(["pg_restore"], "PostgreSQL")
        tables = pg_toc.resolve_tables(request.tables, manifest)
        existing = self._existing_tables()
        if existing is None or request.force:
            return
        if tables is None and existing and not request.options.get("schemas"):
            raise TargetError(
                f"restore target {self.describe()} already holds {len(existing)} table(s); "
                "use --force to replace them"
            )
        clash = sorted(set(tables or []) & set(existing)) or sorted(
            t for t in existing if t.split(".", 1)[0] in (request.options.get("schemas") or [])
        )
        if clash:
            raise TargetError(
                f"restore target {self.describe()} already has table(s) {', '.join(clash)}; "
                "use --force to replace them"
            )

    def restore(self, source: RestoreSource, request: RestoreRequest) -> RestoreResult:
        """pg_restore into this database (created when missing), atomically unless jobs > 1."""
        self.check_target(source.manifest, request)
        tables = pg_toc.resolve_tables(request.tables, source.manifest)
        schemas = [str(s) for s in request.options.get("schemas") or []]
        if request.options.get("globals"):
            self._restore_globals(source)
        if tables is None and not schemas and request.force and self._existing_tables():
            return self._restore_by_swap(source, request)
        created = self._create_if_missing()
        try:
            chosen = self._pg_restore(source, request, tables, schemas)
            self._check_counts(source.manifest, chosen)
        except BaseException:
            if created:  # never a database that was there before
                self._drop_quietly()
            raise
        return RestoreResult(self.describe(), chosen)

    def _restore_by_swap(self, source: RestoreSource, request: RestoreRequest) -> RestoreResult:
        """--force over a database with data: restore beside it, then swap names.

        The old database is dropped only after the new one restored completely
        and its row counts matched, so a failed restore leaves the target as it was.
        """
        self.sweep_scratch_databases()
        scratch = leftovers.scratch_database_name(self.database)  # owner pid + time in the name
        side = self._with_database(scratch)
        fresh = RestoreRequest(tables=None, force=False, options=dict(request.options))
        fresh.options.pop("globals", None)
        try:
            side.restore(source, fresh)
        except BaseException:
            side._drop_quietly()
            raise
        with contextlib.closing(self._connect(MAINTENANCE_DB, TargetError)) as conn:
            conn.autocommit = True
            try:
                conn.execute(f"DROP DATABASE {catalog.ident(self.database)}")
            except Exception as exc:
                side._drop_quietly()
                raise TargetError(
                    f"restore target {self.describe()} cannot be replaced: {_first_line(exc)}"
                ) from None
            conn.execute(
                f"ALTER DATABASE {catalog.ident(scratch)} RENAME TO {catalog.ident(self.database)}"
            )
        return RestoreResult(self.describe(), sorted(source.manifest.tables))

    def sweep_scratch_databases(self, dry_run: bool = False) -> list[leftovers.Leftover]:
        """Scratch databases (``*_dbb_*``) on this server; drops the stale ones unless dry_run.

        Stale means what :mod:`db_backup.leftovers` says (its process is gone, ...);
        one that cannot be dropped (still in use) is reported, not stale.
        """
        with contextlib.closing(self._connect(MAINTENANCE_DB, TargetError)) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", ("%\\_dbb\\_%",)
            ).fetchall()
        server = f"{self.host}:{self.port}"
        found = [f for (name,) in rows if (f := leftovers.classify_database(name, server))]
        for item in found if not dry_run else []:
            if item.stale:
                try:
                    self._with_database(item.name).drop()
                except Exception as exc:
                    item.stale, item.reason = False, f"cannot be dropped: {_first_line(exc)}"
        return found

    def _with_database(self, database: str) -> PostgresConnector:
        twin = copy.copy(self)
        twin.database = database
        return twin

    def _pg_restore(
        self,
        source: RestoreSource,
        request: RestoreRequest,
        tables: list[str] | None,
        schemas: list[str],
    ) -> list[str]:
        tool = _proc.find_tool(["pg_restore"], "PostgreSQL")
        obj = source.part("database")
        staging = source.staged[obj.key].parent
        argv = [tool, "-w", "--exit-on-error", f"--dbname={_conninfo_db(self.database)}"]
        if request.force:
            argv += ["--clean", "--if-exists"]
        if request.options.get("no_owner"):
            argv += ["--no-owner", "--no-privileges"]
        chosen = sorted(source.manifest.tables)
        with self._tool_env() as env, contextlib.ExitStack() as stack:
            if tables is not None or schemas:
                listing = self._selection(source, obj, env, tables or [], schemas)
                list_file = stack.enter_context(_proc.secret_file(listing, staging))
                argv.append(f"--use-list={list_file}")
                chosen = sorted(
                    set(tables or [])
                    | {t for t in source.manifest.tables if t.split(".", 1)[0] in schemas}
                )
            jobs = int(request.options.get("jobs") or 1)
            what = f"database {self.database!r}"
            if jobs > 1:
                archive = stack.enter_context(_decoded_file(source, obj, staging))
                _proc.run_capture(
                    [*argv, f"--jobs={jobs}", str(archive)], env, what, error=TargetError
                )
            else:
                with source.open(obj) as stream:
                    _proc.stream_in([*argv, "--single-transaction"], env, what, stream)
        return chosen

    def _selection(
        self,
        source: RestoreSource,
        obj: Any,
        env: dict[str, str],
        tables: list[str],
        schemas: list[str],
    ) -> str:
        tool = _proc.find_tool(["pg_restore"], "PostgreSQL")
        with source.open(obj) as stream:
            listing = _proc.stream_in(
                [tool, "--list"], env, f"archive {obj.key}", stream, capture=True
            )
        entries = pg_toc.parse_toc(listing)
        objects = source.manifest.extra.get("pg_objects", {})
        keep = pg_toc.select_entries(entries, tables, objects, self._existing_objects(), schemas)
        return pg_toc.render(keep)

    def _restore_globals(self, source: RestoreSource) -> None:
        try:
            obj = source.part("globals")
        except KeyError:
            raise ConfigError(
                f"backup {source.manifest.name}/{source.manifest.backup_id} holds no globals "
                "(back up with globals=true)"
            ) from None
        psql = _proc.find_tool(["psql"], "PostgreSQL")
        # Roles that already exist fail one statement each; the rest still applies.
        argv = [psql, "-X", "-q", "-w", "-v", "ON_ERROR_STOP=0"]
        argv.append(f"--dbname={_conninfo_db(MAINTENANCE_DB)}")
        with self._tool_env(MAINTENANCE_DB) as env, source.open(obj) as stream:
            _proc.stream_in(argv, env, "globals", stream)

    def _create_if_missing(self) -> bool:
        with contextlib.closing(self._connect(MAINTENANCE_DB, TargetError)) as conn:
            conn.autocommit = True
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if found:
                return False
            conn.execute(f"CREATE DATABASE {catalog.ident(self.database)}")
            return True

    def _drop_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.drop()

    def _check_counts(self, manifest: Manifest, tables: list[str]) -> None:
        """Every restored table holds exactly the rows the backup counted."""
        live = self.row_counts()
        for table in tables:
            want = manifest.tables.get(table)
            if want is not None and live.get(table) != want:
                raise IntegrityError(
                    f"restored table {table} in {self.describe()} has {live.get(table)} rows; "
                    f"backup {manifest.name}/{manifest.backup_id} counted {want}"
                )

    def _existing_tables(self) -> dict[str, int] | None:
        """Tables of the target database (no counts), or None when it does not exist."""
        with contextlib.closing(self._connect(MAINTENANCE_DB, TargetError)) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
        if not found:
            return None
        with contextlib.closing(self._connect(error=TargetError)) as conn:
            return {t: 0 for t in catalog.list_tables(conn)}

    def _existing_objects(self) -> set[str]:
        """'SCHEMA s', 'TYPE s.t', 'FUNCTION s.f(args)' already in the target."""
        with contextlib.closing(self._connect(error=TargetError)) as conn:
            return catalog.existing_objects(conn)

    # -- inspection ----------------------------------------------------------
    def row_counts(self) -> dict[str, int]:
        """Exact rows per table ('schema.table'), read in one snapshot."""
        with contextlib.closing(self._connect()) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return {t: catalog.count_rows(conn, t) for t in catalog.list_tables(conn)}

    def check(self) -> list[str]:
        """Problems PostgreSQL reports: invalid indexes (amcheck needs an extension)."""
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE NOT i.indisvalid"
            ).fetchall()
        return [f"index {r[0]} is invalid" for r in rows]

    def scratch_target(self, label: str) -> PostgresConnector:
        """A new, empty database on this server for a restore drill.

        Named ``dbbackup_drill_<label>_<random>``, so it can never be an existing
        database; this connector's own database is not opened. TargetError naming
        the server when it cannot be created (no CREATEDB privilege, ...).
        """
        name = f"dbbackup_drill_{label}"[:54] + f"_{secrets.token_hex(4)}"
        with contextlib.closing(self._connect(MAINTENANCE_DB, TargetError)) as conn:
            conn.autocommit = True
            try:
                conn.execute(f"CREATE DATABASE {catalog.ident(name)}")
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise TargetError(
                    f"cannot create scratch database {name} on {self.host}:{self.port}: {first}"
                ) from exc
        return PostgresConnector(
            host=self.host,
            port=self.port,
            user=self.user,
            database=name,
            password=self._password.reveal(),
            ssl=self.ssl,
            connect_timeout=self.connect_timeout,
        )

    def drop(self) -> None:
        """Drop the database (refused by the server while others are connected)."""
        with contextlib.closing(self._connect(MAINTENANCE_DB, TargetError)) as conn:
            conn.autocommit = True
            conn.execute(f"DROP DATABASE IF EXISTS {catalog.ident(self.database)}")


def check_versions(tool_version: str, server_version: str, database: str) -> None:
    """Refuse a pg_dump older than the server's major version (it cannot dump it)."""
    tool, server = _proc.major_of(tool_version), _proc.major_of(server_version)
    if tool[0] and server[0] and tool[0] < server[0]:
        raise SourceError(
            f"pg_dump {tool_version} is older than PostgreSQL server {server_version} of "
            f"database {database!r}: install postgresql-client-{server[0]} (or newer)"
        )


def _require_engine(manifest: Manifest, engine: str) -> None:
    if manifest.engine != engine:
        raise ConfigError(
            f"backup {manifest.name}/{manifest.backup_id} is a {manifest.engine} backup; "
            f"it cannot be restored into a {engine} database"
        )


@contextlib.contextmanager
def _decoded_file(source: RestoreSource, obj: Any, staging: Path) -> Iterator[Path]:
    """The decoded archive as a file (pg_restore --jobs needs to seek); removed afterwards."""
    path = staging / "pg_restore-jobs.pgdump"
    try:
        with source.open(obj) as stream, open(path, "wb") as out:
            copy_stream(stream, out)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _conninfo_db(name: str) -> str:
    """``dbname='name'``: what --dbname must get so that libpq reads ``name`` as a
    name, not as a connection string (a bare ``a=b c=d`` would be parsed as one)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo("", dbname=name)


def _safe_file(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "database"


_first_line = _proc.first_line
