"""One round-trip case per engine for the encryption tests.

Each case makes a small source database holding a unique marker string,
names a fresh restore target, and reads back every row so a test can compare
restored DATA with the source. Engines whose connector is not in this tree
(they are written on other branches) skip with the reason; at merge they run.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need_service

Rows = dict[str, list[tuple[object, ...]]]


@dataclass
class EngineCase:
    """A source reference, a target reference and a way to read every row of either."""

    engine: str
    source: str
    target: str
    marker: str
    read_rows: Callable[[str], Rows]


def _marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


# -- SQLite ---------------------------------------------------------------------
def _sqlite_rows(path: str) -> Rows:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY rowid').fetchall() for n in names}
    finally:
        conn.close()


@contextmanager
def sqlite_case(tmp: Path) -> Iterator[EngineCase]:
    marker = _marker()
    src = tmp / "shop.db"
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, note TEXT)")
    conn.executemany(
        "INSERT INTO customers(name, note) VALUES (?, ?)",
        [(f"Zoë {i}", f"{marker} row {i} {uuid.uuid4().hex}") for i in range(300)],
    )
    conn.commit()
    conn.close()
    yield EngineCase("sqlite", str(src), str(tmp / "restored.db"), marker, _sqlite_rows)


# -- PostgreSQL (connector from another branch) ---------------------------------
def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _psql(db: str, sql: str) -> str:
    out = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "root",
            "-d",
            db,
            "-AtX",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def _pg_rows(url: str) -> Rows:
    db = url.rsplit("/", 1)[1]
    return {
        "customers": [
            tuple(line.split("|"))
            for line in _psql(db, "SELECT id, name, note FROM customers ORDER BY id").splitlines()
        ]
    }


@contextmanager
def postgres_case(tmp: Path) -> Iterator[EngineCase]:
    need_service(shutil.which("psql") is not None and _port_open(5432), "PostgreSQL on :5432")
    marker, suffix = _marker(), uuid.uuid4().hex[:8]
    src, dst = f"enc_src_{suffix}", f"enc_dst_{suffix}"
    _psql("postgres", f"CREATE DATABASE {src}")
    try:
        _psql(
            src,
            "CREATE TABLE customers (id int PRIMARY KEY, name text, note text); "
            f"INSERT INTO customers SELECT i, 'Zoë ' || i, '{marker} row ' || i "
            "FROM generate_series(1, 300) i",
        )
        base = "postgresql://root@127.0.0.1:5432/"
        yield EngineCase("postgres", base + src, base + dst, marker, _pg_rows)
    finally:
        for db in (src, dst):
            _psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


# -- MariaDB (connector from another branch) ------------------------------------
def _mariadb(sql: str) -> str:
    out = subprocess.run(
        ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B", "-e", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def _mysql_rows(url: str) -> Rows:
    db = url.rsplit("/", 1)[1]
    text = _mariadb(f"SELECT id, name, note FROM {db}.customers ORDER BY id")
    return {"customers": [tuple(line.split("\t")) for line in text.splitlines()]}


@contextmanager
def mysql_case(tmp: Path) -> Iterator[EngineCase]:
    need_service(shutil.which("mariadb") is not None and _port_open(3306), "MariaDB on :3306")
    marker, suffix = _marker(), uuid.uuid4().hex[:8]
    src, dst = f"enc_src_{suffix}", f"enc_dst_{suffix}"
    _mariadb(
        f"CREATE DATABASE {src}; USE {src}; CREATE TABLE customers "
        "(id int PRIMARY KEY, name varchar(50), note varchar(100)); "
        "INSERT INTO customers SELECT seq, concat('Zoë ', seq), "
        f"concat('{marker} row ', seq) FROM seq_1_to_300"
    )
    try:
        base = "mysql://root@127.0.0.1:3306/"
        yield EngineCase("mysql", base + src, base + dst, marker, _mysql_rows)
    finally:
        _mariadb(f"DROP DATABASE IF EXISTS {src}; DROP DATABASE IF EXISTS {dst}")


# -- MongoDB (connector from another branch), on the nx-27017 wire server -------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mongodb_case(tmp: Path) -> Iterator[EngineCase]:
    import time

    pymongo = pytest.importorskip("pymongo")
    from tests.mongo_helpers import nx_executable

    exe = nx_executable()
    need_service(exe is not None, "nx-27017 (MongoDB wire server)")
    assert exe is not None
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--data-dir", str(tmp / "mongo"), "--host", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
        for _ in range(50):
            if _port_open(port):
                break
            time.sleep(0.1)
        marker = _marker()
        client.enc_src.customers.insert_many(
            [{"_id": i, "name": f"Zoë {i}", "note": f"{marker} row {i}"} for i in range(300)]
        )

        def rows(url: str) -> Rows:
            db = url.rsplit("/", 1)[1]
            docs = client[db].customers.find({}, sort=[("_id", 1)])
            return {"customers": [(d["_id"], d["name"], d["note"]) for d in docs]}

        base = f"mongodb://127.0.0.1:{port}/"
        yield EngineCase("mongodb", base + "enc_src", base + "enc_dst", marker, rows)
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


FACTORIES: dict[str, Callable[[Path], AbstractContextManager[EngineCase]]] = {
    "sqlite": sqlite_case,
    "postgres": postgres_case,
    "mysql": mysql_case,
    "mongodb": mongodb_case,
}


def engine_case(engine: str, tmp: Path) -> AbstractContextManager[EngineCase]:
    """The case for ``engine`` (its servers are required under CI, see need_service)."""
    return FACTORIES[engine](tmp)


ENGINES = ["sqlite", "postgres", "mysql", "mongodb"]
