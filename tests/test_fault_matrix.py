"""The fault matrix (issue 12): every engine x every store x five faults.

Engines: SQLite, PostgreSQL (127.0.0.1:5432), MariaDB (127.0.0.1:3306), MongoDB
(nx-27017). Stores: a local directory, S3 (moto), GCS (gcp-storage-emulator),
Azure (Azurite); cloud stores are reached through tests/faultproxy.py.

Faults:

* ``dump-killed``: the dump tool (pg_dump, mariadb-dump) is SIGKILLed once its
  first bytes arrive; SQLite and MongoDB dump in-process, so their stream is cut
  by an exception at the first write;
* ``503-then-recover``: the store answers 503 to the first two requests of the
  upload, then recovers (local: two transient write errors);
* ``store-down``: the store goes away when the upload starts and stays away
  (cloud: connection refused; local: the directory is replaced by a file);
* ``flipped-byte``: one byte of a stored backup object is flipped;
* ``concurrent``: two backups of the same name (different sources) at once.

Every cell asserts: a failed run leaves no manifest (``list`` shows only the
successful backups), the older backup still restores equal to its source, and
every successful backup restores equal to its own source.

The steps are the backup and restore flows' own operations (db_backup.operations,
catalog) with the tasks' retry rule (TRANSFER.retries more attempts when the error is
transient), without the delays; SDK-level retries are off, so every retry seen
here is a task retry. ``test_503_then_recover_through_prefect_task_retries``
runs one cell through the real flow and Prefect's task retries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from db_backup import operations as ops
from db_backup.catalog import (
    allocate_backup_id,
    find_backup,
    list_backups,
    release_backup_id,
)
from db_backup.checks.records import verify_backup_objects
from db_backup.connectors import connector_from_url
from db_backup.errors import IntegrityError, SourceError, StorageError, is_transient
from db_backup.manifest import Manifest
from db_backup.pipeline import DumpSink
from db_backup.storage.base import Storage
from db_backup.storage.local import LocalStorage
from db_backup.tasks.policy import LOOKUP, TRANSFER
from tests import plain_backup
from tests import server_helpers as h
from tests.conftest import need_service
from tests.stores import (  # noqa: F401 - emulator fixtures used through ``stores``
    STORE_KINDS,
    StoreUnderTest,
    azurite,
    gcs_emulator,
    moto,
    stores_fixture,
)

T = TypeVar("T")
ENGINES = ["sqlite", "postgres", "mariadb", "mongodb"]
FAULTS = ["dump-killed", "503-then-recover", "store-down", "flipped-byte", "concurrent"]
NAME = "shop"
KILL_ROWS = 200_000  # a dump a few MB long: the tool is still running at its first block
DUMP_TOOLS = {"postgres": ("pg_dump",), "mariadb": ("mariadb-dump", "mysqldump")}


class DumpKilled(Exception):
    """The in-process dump stopped mid-stream (what a killed process looks like)."""


# -- engines -----------------------------------------------------------------------
class Engine:
    """Make small source databases of one engine, fresh targets, and compare them.

    Sources are read-only in every cell, so with ``shared`` (the module's engine of
    the same kind) each (seed, rows) source is built once per module.
    """

    def __init__(self, kind: str, tmp: Path, nx: str | None, shared: Engine | None = None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.nx = nx
        self.shared = shared
        self.made: list[str] = []
        self.sources: dict[tuple[int, int], str] = {}

    def _name(self, role: str) -> str:
        name = h.unique(f"fm_{role}")
        self.made.append(name)
        return name

    def url(self, name: str) -> str:
        return {
            "sqlite": str(self.tmp / f"{name}.db"),
            "postgres": f"postgresql://root@127.0.0.1:5432/{name}",
            "mariadb": f"mysql://root@127.0.0.1:3306/{name}",
            "mongodb": f"{self.nx}/{name}",
        }[self.kind]

    def source(self, seed: int, rows: int = 30) -> str:
        """A database whose rows depend on ``seed`` (``rows`` of them); never modify it."""
        if self.shared is not None:
            return self.shared.source(seed, rows)
        if (seed, rows) not in self.sources:
            self.sources[seed, rows] = self._make_source(seed, rows)
        return self.sources[seed, rows]

    def _make_source(self, seed: int, rows: int) -> str:
        name = self._name("src")
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.url(name))) as conn, conn:
                conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT)")
                conn.executemany(
                    "INSERT INTO items VALUES (?, ?)",
                    [(i, f"seed {seed} row {i}") for i in range(1, rows + 1)],
                )
        elif self.kind == "postgres":
            h.pg_create(name)
            with h.pg_connect(name) as conn:
                conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text)")
                conn.execute(
                    f"INSERT INTO items SELECT g, concat('seed {seed} row ', g) "
                    f"FROM generate_series(1, {rows}) g"
                )
        elif self.kind == "mariadb":
            h.my_create(name)
            h.my_exec(
                name,
                "CREATE TABLE items (id int PRIMARY KEY, label text)",
                f"INSERT INTO items SELECT seq, concat('seed {seed} row ', seq) "
                f"FROM seq_1_to_{rows}",
            )
        else:
            import pymongo

            with pymongo.MongoClient(self.nx) as client:
                client[name]["items"].insert_many(
                    [{"_id": i, "label": f"seed {seed} row {i}"} for i in range(1, rows + 1)]
                )
        return self.url(name)

    def target(self) -> str:
        return self.url(self._name("dst"))

    def snapshot(self, url: str) -> list[tuple[Any, ...]]:
        name = url.rsplit("/", 1)[-1].removesuffix(".db")
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(url)) as conn:
                return conn.execute("SELECT id, label FROM items ORDER BY id").fetchall()
        if self.kind == "postgres":
            with h.pg_connect(name) as conn:
                return [tuple(r) for r in conn.execute("SELECT * FROM items ORDER BY id")]
        if self.kind == "mariadb":
            return h.my_exec(name, "SELECT * FROM items ORDER BY id")
        import pymongo

        with pymongo.MongoClient(self.nx) as client:
            return [(d["_id"], d["label"]) for d in client[name]["items"].find().sort("_id")]

    def exists(self, url: str) -> bool:
        name = url.rsplit("/", 1)[-1]
        if self.kind == "sqlite":
            return Path(url).exists()
        if self.kind == "postgres":
            return h.pg_exists(name)
        if self.kind == "mariadb":
            return h.my_exists(name)
        import pymongo

        # nx-27017 lists a database after any read (real MongoDB only after a write):
        # "touched" means a collection holds documents.
        with pymongo.MongoClient(self.nx) as client:
            db = client[name]
            return any(db[c].find_one({}) is not None for c in db.list_collection_names())

    def cleanup(self) -> None:
        for name in self.made:
            with contextlib.suppress(Exception):
                if self.kind == "postgres":
                    h.pg_drop(name)
                elif self.kind == "mariadb":
                    h.my_drop(name)
                elif self.kind == "mongodb":
                    import pymongo

                    with pymongo.MongoClient(self.nx) as client:
                        client.drop_database(name)


@pytest.fixture(scope="module")
def nx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One nx-27017 server for this module."""
    from tests.mongo_helpers import nx_executable, start_nx

    need_service(nx_executable() is not None, "nx-27017 (pip install nx-27017)")
    proc, url = start_nx(tmp_path_factory.mktemp("nx"))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shared_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    """One engine per kind for the module: it owns the (read-only) source databases."""
    engines: dict[str, Engine] = {}
    yield engines
    for eng in engines.values():
        eng.cleanup()


@pytest.fixture
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, shared_engines: dict[str, Engine]
) -> Iterator[Callable[[str], Engine]]:
    made: list[Engine] = []

    def make(kind: str) -> Engine:
        if kind == "postgres":
            need_service(h.pg_available(), "PostgreSQL on 127.0.0.1:5432")
        if kind == "mariadb":
            need_service(h.my_available(), "MariaDB on 127.0.0.1:3306")
        nx_url = request.getfixturevalue("nx") if kind == "mongodb" else None
        if kind not in shared_engines:
            home = Path(tempfile.mkdtemp(prefix=f"fm-{kind}-", dir=tmp_path.parent))
            shared_engines[kind] = Engine(kind, home, nx_url)
        eng = Engine(kind, tmp_path, nx_url, shared_engines[kind])
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.cleanup()


# -- the flow's steps with the tasks' retry rule -------------------------------------
def like_a_task(fn: Callable[[], T], retries: int = TRANSFER.retries) -> T:
    """Run ``fn`` as a task with ``retries`` retries on transient errors (no delays)."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == retries or not is_transient(exc):
                raise
    raise AssertionError("unreachable")


def backup(
    store: Storage,
    url: str,
    on_first_bytes: Callable[[], None] | None = None,
    before_upload: Callable[[], None] | None = None,
) -> Manifest:
    """What backup_database does: reserve an id, dump, check, upload, manifest last;
    on failure the id is given back if nothing was stored under it."""
    connector = connector_from_url(url)
    backup_id = like_a_task(lambda: allocate_backup_id(store, NAME), retries=LOOKUP.retries)
    try:
        with tempfile.TemporaryDirectory(prefix="fm-stage-") as staging:
            outcome = like_a_task(lambda: _dump(connector, Path(staging), on_first_bytes))
            if before_upload is not None:
                before_upload()
            stored = []
            for obj in outcome.objects:
                checked = ops.verify_staged(obj)
                key = ops.object_key(NAME, backup_id, obj.filename)
                stored.append(like_a_task(lambda: ops.upload_staged(store, checked, key)))  # noqa: B023
            manifest = ops.build_manifest(
                name=NAME,
                backup_id=backup_id,
                connector=connector,
                outcome=outcome,
                stored=stored,
                compression={"algorithm": "zstd", "level": 1},
                flow_run_id=None,
            )
            like_a_task(lambda: ops.commit_manifest(store, manifest))
    except BaseException:
        with contextlib.suppress(Exception):
            release_backup_id(store, NAME, backup_id)
        raise
    return manifest


def _dump(connector: Any, staging: Path, on_first_bytes: Callable[[], None] | None) -> Any:
    fired: list[bool] = []

    def progress(_n: int) -> None:
        if on_first_bytes is not None and not fired:
            fired.append(True)
            on_first_bytes()

    return ops.stage_dump(connector, DumpSink(staging, level=1, progress=progress))


def restore_equal(eng: Engine, store: Storage, backup_id: str, source: str) -> None:
    """Restore one backup into a fresh target and compare it with its source."""
    target = eng.target()
    manifest = find_backup(store, NAME, backup_id)
    plain_backup.restore(store, manifest, connector_from_url(target))
    assert eng.snapshot(target) == eng.snapshot(source), f"{backup_id} != {source}"


# -- faults ----------------------------------------------------------------------
def kill_dump_tool(kind: str) -> Callable[[], None]:
    """SIGKILL the running dump tool (a child of this process), or cut an in-process dump."""

    def fire() -> None:
        tools = DUMP_TOOLS.get(kind)
        if tools is None:
            raise DumpKilled("dump stopped mid-stream")
        killed = [pid for pid in _children() if _comm(pid) in tools and _alive(pid)]
        assert killed, f"no running {tools} to kill (the dump ended before its first block?)"
        for pid in killed:
            os.kill(pid, signal.SIGKILL)

    return fire


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class FlakyLocal(LocalStorage):
    """A local store whose next ``fail`` writes raise a transient error (the 503 analogue)."""

    fail = 0
    failed = 0

    def put_file(self, key: str, path: Path) -> None:
        if self.failed < self.fail:
            self.failed += 1
            raise StorageError(f"storage path {self.root}/{key}: I/O error (injected)")
        super().put_file(key, path)


@contextlib.contextmanager
def local_outage(root: Path) -> Iterator[Callable[[], None]]:
    """``down()`` replaces the store's directory with a file (an unmounted volume)."""
    away = root.with_name(root.name + ".away")

    def down() -> None:
        root.rename(away)
        root.write_text("not mounted")

    try:
        yield down
    finally:
        if away.exists():
            root.unlink(missing_ok=True)
            away.rename(root)


def flip_byte(store: Storage, manifest: Manifest) -> None:
    obj = manifest.objects[0]
    data = bytearray(store.get_bytes(obj.key))
    data[len(data) // 2] ^= 0x01
    store.put_bytes(obj.key, bytes(data))


# -- the matrix --------------------------------------------------------------------
CELLS = [
    pytest.param(e, s, f, id=f"{e}-{s}-{f}") for e in ENGINES for s in STORE_KINDS for f in FAULTS
]


@pytest.mark.parametrize(("engine_kind", "store_kind", "fault"), CELLS)
def test_fault_cell(
    engine_kind: str,
    store_kind: str,
    fault: str,
    engine: Callable[[str], Engine],
    stores: Callable[[str], StoreUnderTest],
    tmp_path: Path,
) -> None:
    """Guards issue 12 ("fault matrix"): under each fault, no manifest for a failed run,
    the older backup still restores, every successful backup restores to its source."""
    eng = engine(engine_kind)
    sut = stores(store_kind)
    if sut.proxy is None:
        sut.store = sut.direct = FlakyLocal(tmp_path / "local-store")
    cell = Cell(eng, sut, sut.impatient())
    older_src = eng.source(seed=1)
    older = backup(cell.store, older_src)
    cell.good[older.backup_id] = older_src
    CHECKS[fault](cell)
    listed = [m.backup_id for m in list_backups(sut.direct, NAME)]
    expected = sorted([*cell.good, *cell.damaged])
    assert listed == expected, "a failed run left a manifest, or a backup went missing"
    for backup_id, source in cell.good.items():
        restore_equal(eng, sut.direct, backup_id, source)


@dataclass
class Cell:
    """One cell's engine and store, the successful backups (id -> source) and damaged ids."""

    eng: Engine
    sut: StoreUnderTest
    store: Storage
    good: dict[str, str] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)


def _dump_killed(cell: Cell) -> None:
    eng = cell.eng
    big = eng.source(seed=2, rows=KILL_ROWS if eng.kind in DUMP_TOOLS else 30)
    with pytest.raises((SourceError, DumpKilled)):
        backup(cell.store, big, on_first_bytes=kill_dump_tool(eng.kind))


def _503_then_recover(cell: Cell) -> None:
    src = cell.eng.source(seed=2)
    proxy, store = cell.sut.proxy, cell.store

    def inject() -> None:
        if proxy is not None:
            proxy.add("503", times=2)
        else:
            store.fail = 2  # type: ignore[attr-defined]

    made = backup(store, src, before_upload=inject)
    injected = proxy.injected if proxy else ["local"] * store.failed  # type: ignore[attr-defined]
    assert len(injected) == 2, injected
    cell.good[made.backup_id] = src


def _store_down(cell: Cell) -> None:
    src = cell.eng.source(seed=2)
    proxy = cell.sut.proxy
    if proxy is not None:
        with pytest.raises(StorageError):
            backup(cell.store, src, before_upload=proxy.close)
        return
    with local_outage(Path(cell.sut.store.describe())) as down, pytest.raises(StorageError):
        backup(cell.store, src, before_upload=down)


def _flipped_byte(cell: Cell) -> None:
    eng, direct = cell.eng, cell.sut.direct
    src = eng.source(seed=2)
    made = backup(cell.store, src)
    flip_byte(direct, made)
    target = eng.target()
    with pytest.raises(IntegrityError, match="sha256"):
        plain_backup.restore(direct, made, connector_from_url(target))
    assert not eng.exists(target), "the restore touched its target before checking the download"
    assert verify_backup_objects(direct, made).problems, "verify missed the flipped byte"
    cell.damaged.append(made.backup_id)  # still listed (it is a backup) but fails verify


def _concurrent(cell: Cell) -> None:
    sources = [cell.eng.source(seed=2), cell.eng.source(seed=3)]
    start = threading.Barrier(len(sources))

    def run(src: str) -> Manifest:
        start.wait()
        return backup(cell.store, src)

    with ThreadPoolExecutor(len(sources)) as pool:
        made = list(pool.map(run, sources))
    assert made[0].backup_id != made[1].backup_id
    for manifest, src in zip(made, sources, strict=True):
        cell.good[manifest.backup_id] = src


CHECKS: dict[str, Callable[[Cell], None]] = {
    "dump-killed": _dump_killed,
    "503-then-recover": _503_then_recover,
    "store-down": _store_down,
    "flipped-byte": _flipped_byte,
    "concurrent": _concurrent,
}


@pytest.mark.slow
def test_503_then_recover_through_prefect_task_retries(
    stores: Callable[[str], StoreUnderTest],
    prefect_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 503-then-recover cell through the real flow: the SDK gives up at once
    (DB_BACKUP_STORAGE_RETRIES=1), so only Prefect's task retries (retry_transient)
    can carry the upload through; delays are cut to zero."""
    from db_backup.flows.backup import backup_database
    from db_backup.tasks import backup as backup_tasks
    from tests.cloud.conftest import s3_env

    sut = stores("s3")
    assert sut.proxy is not None
    for key, value in {**s3_env(sut.proxy.endpoint), "DB_BACKUP_STORAGE_RETRIES": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(backup_tasks.upload_file, "retry_delay_seconds", [0.0, 0.0, 0.0])
    src = Path(Engine("sqlite", tmp_path, None).source(seed=4))
    older = backup_database(database=str(src), storage=f"s3://{sut.bucket}", name=NAME)
    with contextlib.closing(sqlite3.connect(src)) as conn, conn:
        conn.execute("UPDATE items SET label = 'changed' WHERE id = 1")
    sut.proxy.add("503", times=2, method="PUT", path_contains=".zst")
    newer = backup_database(database=str(src), storage=f"s3://{sut.bucket}", name=NAME)
    assert len(sut.proxy.injected) == 2, sut.proxy.injected
    assert [m.backup_id for m in list_backups(sut.direct, NAME)] == [older, newer]
    eng = Engine("sqlite", tmp_path, None)
    restore_equal(eng, sut.direct, newer, str(src))
    target = eng.target()
    plain_backup.restore(
        sut.direct, find_backup(sut.direct, NAME, older), connector_from_url(target)
    )
    assert eng.snapshot(target)[0] == (1, "seed 4 row 1")  # the older backup, as it was
