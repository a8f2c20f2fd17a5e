"""MySQL / MariaDB through mariadb-dump (or mysqldump) and the mariadb client.

Dump: ``mariadb-dump --single-transaction --routines --triggers --events
--hex-blob --skip-dump-date`` of one database, streamed into the pipeline.
Row counts are taken in the dump's snapshot: a session of ours holds
``FLUSH TABLES WITH READ LOCK`` (no commit can happen), opens its own
``START TRANSACTION WITH CONSISTENT SNAPSHOT``, starts mariadb-dump and
releases the lock as soon as the dump has produced its first bytes after the
header (mariadb-dump writes the header before it starts its own transaction,
and everything after it from within that transaction), so both snapshots see
the same commits. The lock is held for milliseconds, like mariabackup's. When
it cannot be had (no RELOAD privilege, or a long query holds it past
``lock_wait_timeout``), counts are taken right after the dump starts and the
manifest's ``consistency`` says they are approximate for tables written during
the dump.

Restore: the ``mariadb``/``mysql`` client reads the dump into the same or
another database (created when missing, dropped again if the restore fails).
MySQL DDL commits implicitly, so a failed restore into an existing database
can leave it partly restored: restore into a new name when in doubt.
Selective restore filters the stream (:mod:`db_backup.connectors.mysql.filter`).

Passwords: the block's, else ``$DB_BACKUP_MYSQL_PASSWORD``, else
``$MYSQL_PWD``. Tools get them in a 0600 in-memory ``--defaults-extra-file``
(``/dev/fd/N``, gone with the last process holding it); never argv, never a
URL. Every value in that option file is double-quoted and escaped, and URL
options are an allow-list with a validator each, so no value can add a line.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from db_backup.connectors import _proc
from db_backup.connectors._proc import Secret
from db_backup.connectors.base import DumpResult, RestoreRequest, RestoreResult, RestoreSource
from db_backup.connectors.mysql.filter import filtered_stream
from db_backup.errors import (
    ConfigError,
    IntegrityError,
    SourceError,
    TargetError,
    ToolFailed,
    TransientSourceError,
    TransientToolFailed,
)
from db_backup.manifest import Manifest
from db_backup.parsing import refuse_url_secrets
from db_backup.pipeline import COPY_CHUNK, DumpSink

PASSWORD_ENVS = ("DB_BACKUP_MYSQL_PASSWORD", "MYSQL_PWD")
SSL_OPTIONS = ("ssl-ca", "ssl-cert", "ssl-key", "ssl-verify-server-cert", "ssl")
PATH_OPTIONS = ("ssl-ca", "ssl-cert", "ssl-key")
BOOL_OPTIONS = ("ssl-verify-server-cert", "ssl")
TRUE_WORDS = ("1", "true", "on", "yes")
FALSE_WORDS = ("0", "false", "off", "no")
# Client errors a retry may cure: can't connect (socket / TCP), server gone, lost
# connection, server shutting down, too many connections.
TRANSIENT_CODES = frozenset({1040, 1053, 2002, 2003, 2006, 2013})
DUMP_TOOLS = ["mariadb-dump", "mysqldump"]
CLIENT_TOOLS = ["mariadb", "mysql"]
DUMP_FLAGS = [
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--skip-dump-date",
    "--default-character-set=utf8mb4",
]
HEADER_END = b"SQL_NOTES=0 */;"
SECTION = b"\n--\n-- "
DONE_MARK = b"-- Dump completed"
LOCK_WAIT_SECONDS = 2


def from_url(url: str, **options: Any) -> MySQLConnector:
    """A connector for ``mysql://user@host:port/db?ssl-ca=...``; no password allowed."""
    refuse_url_secrets(url, hint="set DB_BACKUP_MYSQL_PASSWORD or use a mysql-database block")
    parts = urlsplit(url)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(f"MySQL URL {url} names no database (mysql://host/DB)")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(query) - set(SSL_OPTIONS) - {"connect_timeout"}
    if unknown:
        raise ConfigError(f"unknown MySQL URL option(s) {', '.join(sorted(unknown))}")
    timeout = query.get("connect_timeout", "10")
    if not timeout.isdigit() or not 1 <= int(timeout) <= 3600:
        raise ConfigError(f"MySQL URL option connect_timeout={timeout!r} must be 1 to 3600 seconds")
    return MySQLConnector(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else "root",
        database=database,
        ssl={k: check_option(k, v) for k, v in query.items() if k in SSL_OPTIONS},
        connect_timeout=int(timeout),
        **options,
    )


def check_option(name: str, value: str) -> str:
    """The value of a TLS option as it goes into the option file; ConfigError if invalid.

    Paths (ssl-ca, ssl-cert, ssl-key) must be non-empty and free of control
    characters; switches (ssl, ssl-verify-server-cert) are 1/0, true/false,
    on/off or yes/no (empty means on), normalised to 1 or 0.
    """
    if name in PATH_OPTIONS:
        if not value or _has_control(value):
            raise ConfigError(
                f"MySQL URL option {name} must be a file path without control characters"
            )
        return value
    word = value.strip().lower()
    if word in ("", *TRUE_WORDS):
        return "1"
    if word in FALSE_WORDS:
        return "0"
    raise ConfigError(f"MySQL URL option {name}={value!r} must be 1/0, true/false, on/off")


class MySQLConnector:
    """One MySQL or MariaDB database (schema)."""

    engine = "mysql"
    compress_threads = 0  # the server shares this host: leave it a core

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str = "root",
        database: str,
        password: str | None = None,
        ssl: dict[str, str] | None = None,
        connect_timeout: int = 10,
    ) -> None:
        for what, value in (("user name", user), ("host", host), ("database name", database)):
            if "\0" in value:
                raise ConfigError(f"MySQL {what} {value!r} contains a NUL character")
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self.ssl = {k: check_option(k, v) for k, v in (ssl or {}).items()}
        self.connect_timeout = connect_timeout
        self._password = Secret(password or _proc.env_password(PASSWORD_ENVS))

    def __repr__(self) -> str:
        return f"MySQLConnector({self.describe()!r})"

    def describe(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    # -- connections ---------------------------------------------------------
    def _connect(self, database: str | None = "", error: type[Exception] = SourceError) -> Any:
        import pymysql

        db = self.database if database == "" else database
        ssl: dict[str, Any] = {}
        if "ssl-ca" in self.ssl:
            ssl["ca"] = self.ssl["ssl-ca"]
        if "ssl-cert" in self.ssl:
            ssl["cert"] = self.ssl["ssl-cert"]
        if "ssl-key" in self.ssl:
            ssl["key"] = self.ssl["ssl-key"]
        try:
            return pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self._password.reveal() or "",
                database=db,
                connect_timeout=self.connect_timeout,
                charset="utf8mb4",
                autocommit=True,
                ssl=ssl or None,
            )
        except pymysql.Error as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            if error is SourceError and code in TRANSIENT_CODES:
                error = TransientSourceError
            raise error(
                f"cannot connect to MySQL database {db or '(server)'!r} at {self.host}:{self.port} "
                f"as {self.user}: {_mysql_message(exc)}"
            ) from None

    @contextlib.contextmanager
    def _defaults_file(self) -> Iterator[list[str]]:
        """argv prefix with a 0600 in-memory option file: host, port, user, password, TLS.

        Every value is double-quoted and escaped (:func:`option_value`), so a
        user name, password or option can never start a line of its own.
        """
        settings = {"host": self.host, "port": str(self.port), "user": self.user}
        if self.host not in ("localhost", ""):
            settings["protocol"] = "tcp"
        secret = self._password.reveal()
        if secret is not None:
            settings["password"] = secret
        settings.update(self.ssl)
        lines = ["[client]", *(f"{k}={option_value(v)}" for k, v in settings.items())]
        with _proc.secret_path("\n".join(lines) + "\n") as path:
            yield [f"--defaults-extra-file={path}"]

    def _env(self) -> dict[str, str]:
        return _proc.child_env()

    def ping(self) -> None:
        """Raise SourceError unless the database accepts a connection and a query."""
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")

    # -- dump ----------------------------------------------------------------
    def dump(self, sink: DumpSink) -> DumpResult:
        """Dump one consistent snapshot; count rows in a snapshot taken at the same point."""
        tool = _proc.find_tool(DUMP_TOOLS, "MariaDB/MySQL")
        tool_version = _proc.tool_version(tool)
        conn = self._connect()
        try:
            server_version = _scalar(conn, "SELECT VERSION()")
            check_versions(Path(tool).name, tool_version, server_version, self.database)
            tables = _list_tables(conn)
            locked = _try_global_lock(conn)
            _scalar(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            _scalar(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
            counter = _proc.RowCounter("mysql-row-counts", conn, tables, _count)
            self._run_dump(tool, sink, conn if locked else None, counter)
            counter.join()
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        exact = locked
        return DumpResult(
            server_version=server_version,
            tool=Path(tool).name,
            tool_version=tool_version,
            tables=counter.result(),
            consistency=(
                "snapshot: mariadb-dump --single-transaction; row counts from a consistent "
                "snapshot opened under the same global read lock"
                if exact
                else "snapshot: mariadb-dump --single-transaction; row counts approximate "
                "(no global read lock: RELOAD privilege missing or lock wait timed out)"
            ),
            extra={"database": self.database, "exact_counts": exact},
        )

    def _run_dump(self, tool: str, sink: DumpSink, locked: Any, counter: _proc.RowCounter) -> None:
        what = f"database {self.database!r}"
        with (
            self._defaults_file() as defaults,
            sink.open("database", f"{_safe_file(self.database)}.sql", "mysql-dump") as out,
        ):
            argv = [tool, *defaults, *DUMP_FLAGS, "--", self.database]
            watcher = _StartWatcher(out, locked, counter)
            _stream_checked(argv, self._env(), what, watcher)

    # -- restore -------------------------------------------------------------
    def check_target(self, manifest: Manifest, request: RestoreRequest) -> None:
        """Refuse, before any download, a restore that would clobber data or cannot work."""
        if manifest.engine != "mysql":
            raise ConfigError(
                f"backup {manifest.name}/{manifest.backup_id} is a {manifest.engine} backup; "
                "it cannot be restored into a mysql database"
            )
        _proc.find_tool(CLIENT_TOOLS, "MariaDB/MySQL")
        check_tables(request.tables, manifest)
        existing = self._existing_tables()
        if existing is None or request.force:
            return
        if request.tables is None and existing:
            raise TargetError(
                f"restore target {self.describe()} already holds {len(existing)} table(s); "
                "use --force to replace them"
            )
        clash = name_clashes(request.tables or [], existing, self._names_fold_case())
        if clash:
            raise TargetError(
                f"restore target {self.describe()} already has table(s) {', '.join(clash)}; "
                "use --force to replace them"
            )

    def restore(self, source: RestoreSource, request: RestoreRequest) -> RestoreResult:
        """Pipe the dump (or the chosen tables of it) into the mariadb client."""
        self.check_target(source.manifest, request)
        client = _proc.find_tool(CLIENT_TOOLS, "MariaDB/MySQL")
        created = self._create_if_missing()
        chosen = sorted(request.tables) if request.tables else sorted(source.manifest.tables)
        try:
            with self._defaults_file() as defaults, source.open(source.part("database")) as raw:
                stream = filtered_stream(raw, set(request.tables)) if request.tables else raw
                argv = [client, *defaults, "--batch", "--binary-mode", "--", self.database]
                _proc.stream_in(argv, self._env(), f"database {self.database!r}", stream)
            self._check_counts(source.manifest, chosen)
        except BaseException:
            if created:  # never a database that was there before
                with contextlib.suppress(Exception):
                    self.drop()
            raise
        return RestoreResult(self.describe(), chosen)

    def _create_if_missing(self) -> bool:
        with contextlib.closing(self._connect(None, TargetError)) as conn, conn.cursor() as cur:
            if cur.execute("SHOW DATABASES LIKE %s", (_like(self.database),)):
                return False
            cur.execute(f"CREATE DATABASE {_ident(self.database)} CHARACTER SET utf8mb4")
            return True

    def _check_counts(self, manifest: Manifest, tables: list[str]) -> None:
        fold = str.lower if self._names_fold_case() else str  # a restored `Base` may be `base`
        live = {fold(k): v for k, v in self.row_counts().items()}
        for table in tables:
            want = manifest.tables.get(table)
            got = live.get(fold(table))
            if want is not None and got != want:
                raise IntegrityError(
                    f"restored table {table} in {self.describe()} has {got} rows; "
                    f"backup {manifest.name}/{manifest.backup_id} counted {want}"
                )

    def _names_fold_case(self) -> bool:
        """True when the server compares table names case-insensitively.

        ``lower_case_table_names`` 1 (stored lower case) or 2 (compared lower
        case): then ``Base`` in the target is the table a restore of ``base`` drops.
        """
        with contextlib.closing(self._connect(None, TargetError)) as conn:
            return int(_scalar(conn, "SELECT @@lower_case_table_names") or 0) != 0

    def _existing_tables(self) -> list[str] | None:
        with contextlib.closing(self._connect(None, TargetError)) as conn, conn.cursor() as cur:
            if not cur.execute("SHOW DATABASES LIKE %s", (_like(self.database),)):
                return None
            cur.execute(
                "SELECT table_name FROM information_schema.TABLES WHERE table_schema = %s",
                (self.database,),
            )
            return [str(r[0]) for r in cur.fetchall()]

    # -- inspection ----------------------------------------------------------
    def row_counts(self) -> dict[str, int]:
        """Exact rows per base table, read in one consistent snapshot."""
        with contextlib.closing(self._connect()) as conn:
            _scalar(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
            return {t: _count(conn, t) for t in _list_tables(conn)}

    def check(self) -> list[str]:
        """Problems CHECK TABLE reports for any table."""
        problems: list[str] = []
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            for table in _list_tables(conn):
                cur.execute(f"CHECK TABLE {_ident(table)}")
                for row in cur.fetchall():
                    if row[2] == "error" or (row[2] == "status" and row[3] != "OK"):
                        problems.append(f"{table}: {row[3]}")
        return problems

    def scratch_target(self, label: str) -> MySQLConnector:
        """A new, empty database on this server for a restore drill.

        Named ``dbbackup_drill_<label>_<random>``, so it can never be an existing
        database; this connector's own database is not opened. TargetError naming
        the server when it cannot be created (no CREATE privilege, ...).
        """
        name = f"dbbackup_drill_{label}"[:55] + f"_{secrets.token_hex(4)}"
        with contextlib.closing(self._connect(None, TargetError)) as conn, conn.cursor() as cur:
            try:
                cur.execute(f"CREATE DATABASE {_ident(name)} CHARACTER SET utf8mb4")
            except Exception as exc:
                raise TargetError(
                    f"cannot create scratch database {name} on {self.host}:{self.port}: {exc}"
                ) from exc
        return MySQLConnector(
            host=self.host,
            port=self.port,
            user=self.user,
            database=name,
            password=self._password.reveal(),
            ssl=self.ssl,
            connect_timeout=self.connect_timeout,
        )

    def drop(self) -> None:
        with contextlib.closing(self._connect(None, TargetError)) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {_ident(self.database)}")


class _StartWatcher:
    """Write-through to the sink that notices when mariadb-dump is inside its snapshot.

    The first bytes after the header (or the end of the dump) prove that
    mariadb-dump's transaction has started: then the global read lock is
    released and the row counter starts. It also keeps the dump's tail, to
    check for mariadb-dump's completion line.
    """

    def __init__(self, out: IO[bytes], locked: Any, counter: _proc.RowCounter) -> None:
        self._out = out
        self._locked = locked
        self._counter = counter
        self._seen = b""
        self.started = False
        self.tail = b""

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self.tail = data[-256:] if len(data) >= 256 else (self.tail + data)[-256:]
        if not self.started:
            self._seen = (self._seen + data)[-65536:]
            end = self._seen.find(HEADER_END)
            if end >= 0 and self._seen.find(SECTION, end) >= 0:
                self.start()

    def start(self) -> None:
        """Release the lock (if held) and start counting; idempotent."""
        if self.started:
            return
        self.started = True
        if self._locked is not None:
            _scalar(self._locked, "UNLOCK TABLES")
        self._counter.start()


def _stream_checked(
    argv: list[str], env: dict[str, str], what: str, watcher: _StartWatcher
) -> None:
    """Stream mariadb-dump into ``watcher``; ToolFailed on a bad exit or a truncated dump."""
    tool = Path(argv[0]).name
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                pass_fds=_proc.inherited_fds(argv, env),
            )
        except OSError as exc:
            watcher.start()
            raise ToolFailed(f"{tool} cannot be started for {what}: {exc.strerror}") from exc
        _proc.widen_pipe(proc.stdout)
        try:
            assert proc.stdout is not None
            # Small reads until the snapshot is known to be open (to release the lock at
            # once), then whole 1 MiB blocks: far fewer calls through hash and zstd.
            while block := (
                proc.stdout.read(COPY_CHUNK) if watcher.started else proc.stdout.read1(COPY_CHUNK)  # type: ignore[attr-defined]
            ):
                watcher.write(block)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            watcher.start()
        code = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if code != 0:
        kind = TransientToolFailed if _proc.transient_text(stderr) else ToolFailed
        raise kind(f"{tool} failed for {what} (exit {code}): {_proc.first_error_line(stderr)}")
    if DONE_MARK not in watcher.tail:
        raise ToolFailed(f"{tool} output for {what} is truncated (no 'Dump completed' line)")


def check_versions(tool: str, tool_version: str, server_version: str, database: str) -> None:
    """Refuse a mysqldump older than a MySQL server's major version (MySQL 8 needs 8)."""
    if "mariadb" in server_version.lower() or tool.startswith("mariadb"):
        return  # mariadb-dump reads MariaDB and MySQL servers of any supported version
    tool_major, server_major = _proc.major_of(tool_version), _proc.major_of(server_version)
    if tool_major[0] and server_major[0] and tool_major < server_major:
        raise SourceError(
            f"{tool} {tool_version} is older than MySQL server {server_version} of database "
            f"{database!r}: install a client of version "
            f"{server_major[0]}.{server_major[1]} or newer"
        )


def check_tables(tables: list[str] | None, manifest: Manifest) -> None:
    """ConfigError naming the tables that are not in the backup."""
    missing = [t for t in tables or [] if t not in manifest.tables]
    if missing:
        raise ConfigError(
            f"table(s) {', '.join(missing)} not in backup {manifest.name}/{manifest.backup_id} "
            f"(it has: {', '.join(sorted(manifest.tables)) or 'no tables'})"
        )


def name_clashes(tables: list[str], existing: list[str], fold_case: bool) -> list[str]:
    """The ``tables`` a restore would replace in a target holding ``existing``."""
    key = str.lower if fold_case else str
    present = {key(t) for t in existing}
    return sorted(t for t in tables if key(t) in present)


def _try_global_lock(conn: Any) -> bool:
    """Take FLUSH TABLES WITH READ LOCK briefly; False when it cannot be had."""
    import pymysql

    try:
        _scalar(conn, f"SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}")
        _scalar(conn, "FLUSH TABLES WITH READ LOCK")
        return True
    except pymysql.Error:
        return False


def _list_tables(conn: Any) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.TABLES WHERE table_schema = DATABASE() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [str(r[0]) for r in cur.fetchall()]


def _count(conn: Any, table: str) -> int:
    return int(_scalar(conn, f"SELECT COUNT(*) FROM {_ident(table)}"))


def _scalar(conn: Any, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return row[0] if row else None


def _mysql_message(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1].splitlines()[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_OPTION_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}


def option_value(value: str) -> str:
    """``value`` as a MariaDB/MySQL option-file value: double-quoted, with ``\\``,
    ``"``, newline, carriage return, tab and backspace escaped (the escapes the
    option-file reader undoes), so it is read back exactly and stays on its line."""
    if "\0" in value:
        raise ConfigError("a MySQL option value contains a NUL character")
    return '"' + "".join(_OPTION_ESCAPES.get(c, c) for c in value) + '"'


def _has_control(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _like(name: str) -> str:
    return name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _safe_file(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "database"
