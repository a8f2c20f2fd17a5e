"""MongoDB through pymongo: mongodump-compatible dumps and selective restores.

The dump is one object, a tar stream of mongodump's directory layout (see
:mod:`db_backup.connectors.mongodb.archive`). Documents travel as raw BSON from
``find_raw_batches`` to the archive and from the archive to ``insert_many`` of
``RawBSONDocument``: never decoded, so every BSON type survives byte for byte.

A tar header states its member's size, so each collection's BSON is staged
uncompressed in the sink's staging directory before it enters the stream:
staging needs room for the largest collection (plus the compressed dump);
only one collection is staged at a time.

Consistency: on a replica set or sharded cluster every collection is read in
one snapshot session (read concern ``snapshot``), i.e. at one cluster time;
on a standalone server each collection is read on its own and the manifest
says so. Indexes and options are read outside the snapshot.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from db_backup.connectors.base import DumpResult, RestoreRequest, RestoreResult, RestoreSource
from db_backup.connectors.mongodb.archive import (
    BSON_SUFFIX,
    METADATA_SUFFIX,
    ArchiveIndex,
    ArchiveWriter,
    collection_metadata,
    drain,
    iter_documents,
    iter_members,
    member_name,
    scan_archive,
    write_raw_batches,
)
from db_backup.connectors.mongodb.restore import (
    archive_entry,
    check_index,
    create_collection,
    create_indexes,
    insert_documents,
    select_collections,
)
from db_backup.errors import (
    BackupError,
    ConfigError,
    SourceError,
    TargetError,
    TransientSourceError,
)
from db_backup.manifest import Manifest

PASSWORD_ENV = "DB_BACKUP_MONGO_PASSWORD"
ARCHIVE_FORMAT = "mongodump-tar"
# Our own URL query parameters, removed before pymongo sees the URI.
OWN_PARAMS = ("collections",)
DEFAULT_TIMEOUT_MS = 10_000
AUTH_CODES = {18, 11}  # AuthenticationFailed, UserNotFound
UNAUTHORIZED = 13
SNAPSHOT_TOO_OLD = 239
SNAPSHOT_WIRE_VERSION = 13  # MongoDB 5.0: snapshot reads outside transactions


class MongoConnector:
    """One MongoDB database, named by ``mongodb://[user@]host[:port]/db[?options]``.

    The password comes from ``password``, else ``$DB_BACKUP_MONGO_PASSWORD``,
    else the URL itself; it is handed to pymongo as a keyword and never
    appears in :meth:`describe`, messages or manifests. ``collections``
    (or ``?collections=a,b`` in the URL) limits a dump to those collections.
    """

    engine = "mongodb"
    compress_threads = 0  # the server may share this host: leave it a core

    def __init__(
        self,
        url: str,
        password: str | None = None,
        collections: Iterable[str] | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        parts = _split_url(url)
        self.database = unquote(parts.path.lstrip("/"))
        own, rest = _own_params(parts.query)
        self.hosts = parts.netloc.rpartition("@")[2]
        self._scheme = parts.scheme
        self._query = rest
        self._username = unquote(parts.username) if parts.username else None
        url_password = unquote(parts.password) if parts.password is not None else None
        self._password = password or os.environ.get(PASSWORD_ENV) or url_password
        self._options = dict(client_options or {})
        chosen = list(collections or []) or _split_names(own.get("collections", ""))
        self.collections = chosen or None
        if not self.database or "/" in self.database:
            raise ConfigError(f"MongoDB URL {self.describe()} must name one database (…/dbname)")

    def describe(self) -> str:
        """``mongodb://[user@]host:port/db``: no password, no query options."""
        user = f"{self._username}@" if self._username else ""
        return f"{self._scheme}://{user}{self.hosts}/{self.database}"

    # -- connection ------------------------------------------------------------
    @contextlib.contextmanager
    def _client(self, error: type[BackupError] = SourceError) -> Iterator[Any]:
        """A connected client; pymongo's failures become ``error`` naming the server."""
        try:
            import pymongo
        except ImportError as exc:
            raise ConfigError(
                "MongoDB support needs pymongo: pip install 'db-backup[mongodb]'"
            ) from exc

        uri = urlunsplit((self._scheme, self.hosts, "/", self._query, ""))
        kwargs: dict[str, Any] = {"appname": "db-backup", **self._options}
        if "serverselectiontimeoutms" not in self._query.lower():
            kwargs.setdefault("serverSelectionTimeoutMS", DEFAULT_TIMEOUT_MS)
        if self._username:
            kwargs["username"] = self._username
        if self._password:
            kwargs["password"] = self._password
        try:
            client: Any = pymongo.MongoClient(uri, **kwargs)
        except Exception as exc:  # pymongo.errors.ConfigurationError, ValueError
            raise ConfigError(f"MongoDB URL {self.describe()} is invalid: {_first(exc)}") from exc
        try:
            yield client
        except BackupError:
            raise
        except Exception as exc:
            raise map_error(exc, self.describe(), error) from exc
        finally:
            client.close()

    def ping(self) -> None:
        """Raise SourceError unless the server answers and the database exists."""
        with self._client() as client:
            self._require_database(client)

    def _require_database(self, client: Any) -> None:
        names = client.list_database_names()
        if self.database not in names:
            raise SourceError(
                f"database {self.database!r} does not exist on {self.hosts} "
                f"(it has: {', '.join(sorted(names)) or 'none'})"
            )

    # -- dump --------------------------------------------------------------------
    def dump(self, sink: Any) -> DumpResult:
        """Stream every chosen collection into ``sink`` as one mongodump-layout tar."""
        with self._client() as client:
            self._require_database(client)
            hello = client.admin.command("hello")
            version = str(client.admin.command("buildInfo").get("version", "unknown"))
            plan = self._plan(client)
            clustered = _snapshot_capable(hello)
            session_cm = (
                client.start_session(snapshot=True) if clustered else contextlib.nullcontext()
            )
            with session_cm as session:
                stats = self._write_archive(client, sink, plan, session)
        return DumpResult(
            server_version=version,
            tool="db-backup-pymongo",
            tool_version=f"pymongo {_pymongo_version()}",
            tables={name: s["documents"] for name, s in stats.items() if "documents" in s},
            consistency=_consistency(clustered),
            extra={
                "database": self.database,
                "collections": stats,
                "views": plan.views,
                "skipped": plan.skipped,
                "topology": "cluster" if clustered else "standalone",
            },
        )

    def _plan(self, client: Any) -> DumpPlan:
        """Which collections to dump, in name order; views kept, time-series skipped."""
        infos = list(client[self.database].list_collections())
        plan = DumpPlan()
        by_name = {i["name"]: i for i in infos if not _is_system(i["name"])}
        wanted = self.collections or sorted(by_name)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise SourceError(
                f"collection(s) {', '.join(missing)} not in database {self.database!r} on "
                f"{self.hosts} (it has: {', '.join(sorted(by_name)) or 'none'})"
            )
        for name in wanted:
            info = by_name[name]
            kind = info.get("type", "collection")
            if kind == "timeseries":
                plan.skipped[name] = "time-series collections are not carried"
            elif kind == "view":
                plan.views.append(name)
                plan.infos.append(info)
            else:
                plan.infos.append(info)
        return plan

    def _write_archive(
        self, client: Any, sink: Any, plan: DumpPlan, session: Any
    ) -> dict[str, dict[str, int]]:
        db = client[self.database]
        stats: dict[str, dict[str, int]] = {}
        with (
            sink.open("database", f"{_file_stem(self.database)}.tar", ARCHIVE_FORMAT) as out,
            ArchiveWriter(out) as tar,
        ):
            tar.add_directory(self.database)
            for info in plan.infos:
                stats[info["name"]] = self._add_collection(db, tar, info, sink.staging, session)
        return stats

    def _add_collection(
        self, db: Any, tar: ArchiveWriter, info: dict[str, Any], staging: Path, session: Any
    ) -> dict[str, int]:
        name = info["name"]
        is_view = info.get("type") == "view"
        indexes = [] if is_view else list(db[name].list_indexes())
        meta = collection_metadata(info, indexes)
        tar.add_bytes(member_name(self.database, name, METADATA_SUFFIX), meta)
        if is_view:
            return {}
        staged = staging / f"collection-{uuid.uuid4().hex[:8]}.bson"
        try:
            with open(staged, "wb") as fh:
                batches = db[name].find_raw_batches({}, session=session)
                count, size = write_raw_batches(batches, fh, f"{self.database}.{name}")
            tar.add_file(member_name(self.database, name, BSON_SUFFIX), staged)
        finally:
            staged.unlink(missing_ok=True)
        return {"documents": count, "bytes": size, "indexes": len(indexes)}

    # -- restore -------------------------------------------------------------------
    def check_target(self, manifest: Manifest, request: RestoreRequest) -> None:
        """Refuse, before any download, unknown collections or a target holding documents."""
        names = select_collections(manifest, request.tables)
        if _drop_requested(request):
            return
        with self._client(TargetError) as client:
            self._refuse_occupied(client, names)

    def _refuse_occupied(self, client: Any, names: list[str]) -> None:
        db = client[self.database]
        existing = {i["name"]: i for i in db.list_collections()}
        busy = [
            n
            for n in names
            if n in existing
            and (
                existing[n].get("type") == "view"
                or db[n].find_one({}, projection={"_id": 1}) is not None
            )
        ]
        if busy:
            raise TargetError(
                f"restore target {self.describe()} already has documents in collection(s) "
                f"{', '.join(busy)}; use --drop to drop them first"
            )

    def restore(self, source: RestoreSource, request: RestoreRequest) -> RestoreResult:
        """Validate the whole archive, then restore the chosen collections.

        Nothing is written before every document's framing and the archive's
        digest have been checked and the target has been found free.
        """
        obj = source.part("database")
        names = select_collections(source.manifest, request.tables)
        with source.open(obj) as stream:
            index = scan_archive(stream, obj.key)
            drain(stream)
        check_index(index, source.manifest, obj.key)
        with self._client(TargetError) as client:
            if not _drop_requested(request):
                self._refuse_occupied(client, names)
            self._restore_all(client, source, index, names, request)
        return RestoreResult(self.describe(), names)

    def _restore_all(
        self,
        client: Any,
        source: RestoreSource,
        index: ArchiveIndex,
        names: list[str],
        request: RestoreRequest,
    ) -> None:
        db = client[self.database]
        entries = [archive_entry(index, n, source.part("database").key) for n in names]
        by_stem = {e.stem: e for e in entries if not e.is_view}
        for entry in entries:
            if _drop_requested(request):
                db.drop_collection(entry.name)
        for entry in by_stem.values():
            create_collection(db, entry)
        obj = source.part("database")
        with source.open(obj) as stream:
            for member in iter_members(stream, obj.key):
                target = by_stem.get(member.stem)
                if target is None or member.suffix != BSON_SUFFIX:
                    continue
                docs = iter_documents(member.stream, member.what, member.info.size)
                insert_documents(db[target.name], docs)
            drain(stream)
        for entry in by_stem.values():
            create_indexes(db, entry)
        for entry in entries:
            if entry.is_view:
                create_collection(db, entry)

    # -- inspection ------------------------------------------------------------------
    def row_counts(self) -> dict[str, int]:
        """Documents per collection (views and system collections left out)."""
        with self._client() as client:
            db = client[self.database]
            names = [
                i["name"]
                for i in db.list_collections()
                if i.get("type", "collection") == "collection" and not _is_system(i["name"])
            ]
            return {n: db[n].count_documents({}) for n in sorted(names)}

    def check(self) -> list[str]:
        """Problems the server's ``validate`` command reports, one per collection."""
        problems: list[str] = []
        with self._client() as client:
            db = client[self.database]
            for name in self.row_counts():
                result = db.command("validate", name)
                if not result.get("valid", True):
                    errors = result.get("errors") or ["invalid"]
                    problems.append(f"{self.database}.{name}: {errors[0]}")
        return problems

    def drop(self) -> None:
        """Drop the whole database (scratch drill targets only)."""
        with self._client(TargetError) as client:
            client.drop_database(self.database)


class DumpPlan:
    """Collections (and views) to dump, and what was left out and why."""

    def __init__(self) -> None:
        self.infos: list[dict[str, Any]] = []
        self.views: list[str] = []
        self.skipped: dict[str, str] = {}


def map_error(exc: BaseException, where: str, error: type[BackupError]) -> BackupError:
    """A pymongo failure as one of our errors: one line naming the server and the cause."""
    from pymongo import errors

    if isinstance(exc, errors.ServerSelectionTimeoutError):
        cause = _first(exc).split(", Timeout:")[0]
        return error(f"MongoDB server {where} is unreachable: {cause}")
    if isinstance(exc, errors.OperationFailure):
        if exc.code in AUTH_CODES or "authentication failed" in str(exc).lower():
            return error(f"authentication failed for MongoDB {where}: {_first(exc)}")
        if exc.code == UNAUTHORIZED:
            return error(f"not authorized on MongoDB {where}: {_first(exc)}")
        if exc.code == SNAPSHOT_TOO_OLD:
            return error(
                f"snapshot read of {where} outlived the server's history window "
                "(raise minSnapshotHistoryWindowInSeconds or dump fewer collections per run)"
            )
    if isinstance(exc, errors.AutoReconnect | errors.NetworkTimeout):
        return TransientSourceError(f"connection to MongoDB {where} was lost: {_first(exc)}")
    if isinstance(exc, errors.BulkWriteError):
        first = (exc.details.get("writeErrors") or [{}])[0]
        return error(f"insert into MongoDB {where} failed: {first.get('errmsg', _first(exc))}")
    if isinstance(exc, errors.PyMongoError):
        return error(f"MongoDB {where}: {_first(exc)}")
    if isinstance(exc, OSError):
        return error(f"MongoDB {where}: {exc}")
    raise exc


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _drop_requested(request: RestoreRequest) -> bool:
    return request.force or bool(request.options.get("drop"))


def _snapshot_capable(hello: dict[str, Any]) -> bool:
    """A replica set or mongos on MongoDB 5.0+ (wire version 13): snapshot reads work."""
    cluster = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
    return cluster and int(hello.get("maxWireVersion", 0)) >= SNAPSHOT_WIRE_VERSION


def _consistency(clustered: bool) -> str:
    if clustered:
        return "snapshot: all collections read at one cluster time (read concern 'snapshot')"
    return (
        "per-collection: standalone server (or older than 5.0), each collection read on its "
        "own; writes made during the dump may appear in some collections and not others"
    )


def _is_system(name: str) -> bool:
    return name.startswith("system.") and name != "system.js"


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "database"


def _split_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _split_url(url: str) -> Any:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        from db_backup.connectors import _safe

        raise ConfigError(f"MongoDB URL {_safe(url)} cannot be parsed: {exc}") from exc
    if parts.scheme not in ("mongodb", "mongodb+srv"):
        raise ConfigError(f"not a MongoDB URL: scheme {parts.scheme!r}")
    return parts


def _own_params(query: str) -> tuple[dict[str, str], str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    own = {k: v for k, v in pairs if k in OWN_PARAMS}
    rest = urlencode([(k, v) for k, v in pairs if k not in OWN_PARAMS])
    return own, rest


def _pymongo_version() -> str:
    import pymongo

    return str(pymongo.version)
