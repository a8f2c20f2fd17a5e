"""Typer application: backup, list, restore, verify."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer

from db_backup.cli.env import prepare_environment, quiet_prefect_console
from db_backup.defaults import DEFAULT_STORAGE, STORAGE_ENV
from db_backup.errors import BackupError, ConfigError
from db_backup.parsing import STORAGE_HINT, is_database_block, refuse_url_secrets

prepare_environment()

T = TypeVar("T")

app = typer.Typer(
    name="db-backup",
    help="Database backups you can trust: SQLite, PostgreSQL, MySQL/MariaDB, MongoDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state: dict[str, Any] = {"verbose": False}

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help=f"Directory, storage URL or block (slug/name). Default: ${STORAGE_ENV} or ./backups.",
        show_default=False,
    ),
]

PassphraseSecretOpt = Annotated[
    str | None,
    typer.Option(
        "--passphrase-secret",
        help="Prefect Secret block holding the encryption passphrase "
        "(default: $DB_BACKUP_PASSPHRASE).",
        show_default=False,
    ),
]


def storage_location(value: str | None) -> str:
    """The store to use: the flag, then $DB_BACKUP_STORAGE, then ./backups.

    A storage URL with credentials exits 2 here, masked, before any flow run
    could record it.
    """
    store = value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    try:
        refuse_url_secrets(store, "storage URL", STORAGE_HINT)
    except ConfigError as exc:
        fail(str(exc), exc.exit_code)
    return store


def fail(message: str, code: int = 1) -> None:
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_flow(fn: Callable[..., T], **params: Any) -> T:
    """Run a flow in this process, mapping failures to a one-line error."""
    quiet_prefect_console(state["verbose"])
    try:
        with progress_display(), attended_run():
            return fn(**params)
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; no manifest was written for an unfinished backup", 130)
    except Exception as exc:  # anything unexpected: still one line, details with --verbose
        if state["verbose"]:
            raise
        fail(f"{type(exc).__name__}: {exc}".splitlines()[0])
    raise AssertionError("unreachable")


@contextmanager
def attended_run() -> Iterator[None]:
    """No flow-run heartbeats for a run the user is watching in this process.

    Heartbeats let a server notice a worker that died; here the CLI reports the
    outcome itself, and stopping the heartbeat thread costs up to a second at
    the end of every run (measured: most of the CLI's fixed cost beyond imports).
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextmanager
def progress_display() -> Iterator[None]:
    """A byte counter on a terminal; nothing when stderr is piped."""
    from db_backup.progress import set_progress

    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, SpinnerColumn, TransferSpeedColumn

    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task("dump", total=None)
        set_progress(lambda n: progress.advance(task, n))
        try:
            yield
        finally:
            set_progress(None)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    state["verbose"] = verbose


def database_reference(kind: str | None, database: str | None, url: str | None) -> str:
    """The flow's ``database`` parameter from --type/--database/--url."""
    from db_backup.connectors import engine_of, normalize_engine

    if url and database:
        raise ConfigError("give --database or --url, not both")
    ref = url or database
    if not ref:
        raise ConfigError("name the database with --database PATH|BLOCK or --url URL")
    refuse_url_secrets(ref)  # before Prefect records the flow's parameters
    if kind is None:
        return ref
    engine = normalize_engine(kind)
    if is_database_block(ref):
        return ref
    if engine == "sqlite":
        if "://" in ref and engine_of(ref) != "sqlite":
            raise ConfigError(f"--type sqlite does not match the URL {ref!r}")
        return ref
    if "://" not in ref:
        raise ConfigError(f"--type {kind} needs --url (e.g. {engine}://user@host:port/db)")
    if engine_of(ref) != engine:
        raise ConfigError(f"--type {kind} does not match the URL scheme of {ref!r}")
    return ref


@app.command()
def backup(
    kind: Annotated[
        str | None, typer.Option("--type", help="sqlite, postgres, mysql or mongodb.")
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", help="SQLite path or database block (slug/name).")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Database URL; passwords come from the environment.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Backup name (default: from the database).")
    ] = None,
    storage: StorageOpt = None,
    level: Annotated[int, typer.Option("--level", min=1, max=22, help="zstd level.")] = 3,
    allow_shrink: Annotated[
        bool, typer.Option("--allow-shrink", help="Accept a dump much smaller than the last one.")
    ] = False,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Accept a database with no tables.")
    ] = False,
    allow_damaged: Annotated[
        bool,
        typer.Option(
            "--allow-damaged",
            help="Back up a SQLite database that fails its integrity check, marked damaged.",
        ),
    ] = False,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt", help="Encrypt every object (passphrase: $DB_BACKUP_PASSPHRASE or secret)."
        ),
    ] = False,
    passphrase_secret: PassphraseSecretOpt = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode", help="full (one object) or incremental (deduplicated chunks, see docs)."
        ),
    ] = "full",
) -> None:
    """Back up a database; the last line of stdout is the backup id."""
    from db_backup.catalog import load_manifest
    from db_backup.flows.backup import backup_database
    from db_backup.units import human_bytes

    try:
        ref = database_reference(kind, database, url)
        from db_backup.chunks.incremental import check_mode
        from db_backup.manifest import check_name

        check_mode(mode)
        if name is not None:
            check_name(name)
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    store = storage_location(storage)
    backup_id = run_flow(
        backup_database,
        database=ref,
        storage=store,
        name=name,
        compression_level=level,
        allow_shrink=allow_shrink,
        encrypt=encrypt,
        passphrase_secret=passphrase_secret,
        mode=mode,
        allow_empty=allow_empty,
        allow_damaged=allow_damaged,
    )
    _print_backup_summary(store, backup_id, name, ref, load_manifest, human_bytes)
    typer.echo(backup_id)


def _print_backup_summary(
    store: str, backup_id: str, name: str | None, ref: str, load: Any, hb: Any
) -> None:
    from db_backup.blocks.resolve import resolve_storage
    from db_backup.staging import default_name

    manifest = load(resolve_storage(store), name or default_name(ref), backup_id)
    ratio = manifest.logical_bytes / manifest.stored_bytes if manifest.stored_bytes else 0.0
    secs = (manifest.finished_at - manifest.started_at).total_seconds()
    typer.echo(
        f"Backed up {manifest.source} as {manifest.name}/{backup_id}: "
        f"{len(manifest.tables)} table(s), {hb(manifest.logical_bytes)} -> "
        f"{hb(manifest.stored_bytes)} ({ratio:.1f}x) in {secs:.1f} s, stored in {store}"
        + (
            f"; incremental: {hb(manifest.uploaded_bytes)} uploaded, "
            f"{hb(manifest.deduplicated_bytes)} deduplicated"
            if manifest.mode == "incremental"
            else ""
        )
    )


@app.command("list")
def list_cmd(
    name: Annotated[str | None, typer.Option("--name", help="Only backups of this name.")] = None,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List complete backups (those with a manifest), oldest first, with their last drill."""
    from db_backup.blocks.resolve import resolve_storage
    from db_backup.catalog import list_backups
    from db_backup.checks.records import drill_fields, latest_checks

    skipped: list[str] = []

    def skip(key: str, exc: Exception) -> None:
        skipped.append(f"warning: skipped {key}: {exc}")

    try:
        store = resolve_storage(storage_location(storage))
        manifests = list_backups(store, name, on_skip=skip)
        checks = latest_checks(store, name, on_skip=skip)
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    for line in skipped:
        typer.echo(line, err=True)
    rows = [{**m.summary(), **drill_fields(checks.get((m.name, m.backup_id)))} for m in manifests]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_table(manifests, rows)


def _print_table(manifests: list[Any], rows: list[dict[str, Any]]) -> None:
    from db_backup.units import human_bytes

    if not manifests:
        typer.echo("no backups")
        return
    typer.echo(
        f"{'NAME':<20} {'ID':<17} {'ENGINE':<8} {'SIZE':>10} {'TABLES':>6}  {'SHA256':<16}  DRILL"
    )
    for m, s in zip(manifests, rows, strict=True):
        typer.echo(
            f"{m.name:<20} {m.backup_id:<17} {m.engine:<8} {human_bytes(m.stored_bytes):>10} "
            f"{len(m.tables):>6}  {s['sha256'][:16]}  {_drill_cell(s)}"
            + ("  (damaged source)" if s["damaged"] else "")
        )


def _drill_cell(row: dict[str, Any]) -> str:
    if row["last_drill_at"] is None:
        return "never"
    return f"{'ok' if row['last_drill_ok'] else 'FAILED'} {row['last_drill_at']}"


def _split_tables(tables: str | None) -> list[str] | None:
    if tables is None:
        return None
    names = [t.strip() for t in tables.split(",") if t.strip()]
    if not names:
        fail("--tables/--collections is empty", 2)
    return names


@app.command()
def restore(
    backup: Annotated[str, typer.Argument(help="Backup id or 'latest'.")],
    name: Annotated[str, typer.Option("--name", help="Backup name.")],
    to: Annotated[str, typer.Option("--to", help="Target: SQLite path, database URL or block.")],
    tables: Annotated[
        str | None,
        typer.Option(
            "--tables",
            "--collections",
            help="Comma-separated tables (MongoDB: collections) to restore (default all).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            "--drop",
            help="Replace data in the target (MongoDB: drop each restored collection first).",
        ),
    ] = False,
    storage: StorageOpt = None,
    passphrase_secret: PassphraseSecretOpt = None,
    schemas: Annotated[
        str | None,
        typer.Option("--schemas", help="PostgreSQL: comma-separated schemas to restore."),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, help="PostgreSQL: parallel pg_restore jobs.")
    ] = 1,
    globals_: Annotated[
        bool, typer.Option("--globals", help="PostgreSQL: also restore roles and tablespaces.")
    ] = False,
) -> None:
    """Restore a backup after verifying its sha256; refuses a non-empty target without --force."""
    from db_backup.flows.restore import restore_database

    try:
        refuse_url_secrets(to, "target URL")
    except BackupError as exc:
        fail(str(exc), exc.exit_code)
    options: dict[str, object] = {}
    if schemas:
        options["schemas"] = _split_tables(schemas)
    if jobs > 1:
        options["jobs"] = jobs
    if globals_:
        options["globals"] = True
    result = run_flow(
        restore_database,
        name=name,
        target=to,
        backup=backup,
        storage=storage_location(storage),
        tables=_split_tables(tables),
        force=force,
        passphrase_secret=passphrase_secret,
        options=options or None,
    )
    if result.get("damaged"):
        typer.echo(
            f"warning: {name}/{result['backup_id']} was taken of a damaged database "
            f"({result['damaged']}); it was restored as it is",
            err=True,
        )
    typer.echo(
        f"Restored {name}/{result['backup_id']} into {result['target']} "
        f"({len(result['tables'])} table(s))"  # type: ignore[arg-type]
    )


@app.command()
def verify(
    backup: Annotated[str, typer.Argument(help="Backup id or 'latest'.")] = "latest",
    name: Annotated[str, typer.Option("--name", help="Backup name.")] = ...,  # type: ignore[assignment]
    storage: StorageOpt = None,
    all_backups: Annotated[
        bool, typer.Option("--all", help="Verify every backup of the name.")
    ] = False,
    passphrase_secret: PassphraseSecretOpt = None,
) -> None:
    """Re-read the stored objects and check size and sha256 against the manifest.

    Encrypted incremental backups need the passphrase to check their chunks.
    """
    from db_backup.blocks.resolve import resolve_storage
    from db_backup.catalog import load_manifest
    from db_backup.flows.restore import verify_backup

    ids = run_flow(
        verify_backup,
        name=name,
        backup=backup,
        storage=storage_location(storage),
        all_backups=all_backups,
        passphrase_secret=passphrase_secret,
    )
    store = resolve_storage(storage_location(storage))
    for backup_id in ids:
        damaged = load_manifest(store, name, backup_id).extra.get("damaged")
        typer.echo(f"ok {name}/{backup_id}" + (f" (damaged source: {damaged})" if damaged else ""))


def main() -> None:
    """Console-script entry point."""
    app()
