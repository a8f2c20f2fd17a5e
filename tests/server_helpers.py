"""Build, snapshot and compare PostgreSQL / MariaDB databases in tests; back up and
restore through the same plain steps the flows run (no Prefect server needed)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

from db_backup import operations as ops
from db_backup.catalog import list_backups
from db_backup.connectors.base import Connector, RestoreRequest, RestoreResult, RestoreSource
from db_backup.manifest import Manifest, new_backup_id
from db_backup.pipeline import DumpSink
from db_backup.read import download_verified
from db_backup.storage.local import LocalStorage

PG = {"host": "127.0.0.1", "port": 5432, "user": "root"}
MY = {"host": "127.0.0.1", "port": 3306, "user": "root"}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the flow's steps, without Prefect -----------------------------------------
def backup(
    connector: Connector,
    store: Path,
    name: str,
    staging: Path,
    allow_shrink: bool = False,
    progress: Any = None,
) -> Manifest:
    """Dump -> stage -> shrink check -> upload -> manifest last, as backup_database does."""
    storage = LocalStorage(store)
    previous = (list_backups(storage, name) or [None])[-1]
    staging.mkdir(parents=True, exist_ok=True)
    sink = DumpSink(staging, level=1, threads=0, progress=progress)
    outcome = ops.stage_dump(connector, sink)
    ops.check_shrink(previous, outcome, 0.5, allow_shrink)
    backup_id = new_backup_id()
    while storage.exists(f"{name}/{backup_id}/manifest.json"):
        from db_backup.manifest import next_backup_id

        backup_id = next_backup_id(backup_id)
    stored = [
        ops.upload_staged(storage, o, ops.object_key(name, backup_id, o.filename))
        for o in outcome.objects
    ]
    manifest = ops.build_manifest(
        name=name,
        backup_id=backup_id,
        connector=connector,
        outcome=outcome,
        stored=stored,
        compression={"algorithm": "zstd", "level": 1},
        flow_run_id=None,
    )
    ops.commit_manifest(storage, manifest)
    return manifest


def restore(
    connector: Any,
    store: Path,
    manifest: Manifest,
    staging: Path,
    tables: list[str] | None = None,
    force: bool = False,
    **options: Any,
) -> RestoreResult:
    """check_target -> download verified -> restore, as restore_database does."""
    request = RestoreRequest(tables=tables, force=force, options=options)
    connector.check_target(manifest, request)
    staging.mkdir(parents=True, exist_ok=True)
    storage = LocalStorage(store)
    staged = {o.key: download_verified(storage, o, staging) for o in manifest.objects}
    return connector.restore(RestoreSource(manifest=manifest, staged=staged), request)  # type: ignore[no-any-return]


def manifests(store: Path) -> list[Path]:
    return sorted(store.rglob("manifest.json"))


# -- PostgreSQL ------------------------------------------------------------------
def pg_connect(dbname: str, **kw: Any) -> Any:
    import psycopg

    params = {**PG, **kw}
    return psycopg.connect(dbname=dbname, autocommit=True, connect_timeout=5, **params)


def pg_available() -> bool:
    try:
        pg_connect("postgres").close()
        return True
    except Exception:
        return False


def pg_create(name: str) -> None:
    with pg_connect("postgres") as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def pg_drop(name: str) -> None:
    with pg_connect("postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_exists(name: str) -> bool:
    with pg_connect("postgres") as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone()
            is not None
        )


PG_RICH = r"""
CREATE SCHEMA sales;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    m mood NOT NULL DEFAULT 'ok',
    tags text[],
    score numeric(20, 6),
    ratio double precision,
    born date,
    seen timestamptz,
    CHECK (score IS NULL OR score >= 0)
);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    total numeric(12, 2),
    doc jsonb,
    raw json,
    blob bytea,
    at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00',
    note text
);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_doc ON orders USING gin (doc);
CREATE TABLE audit (id serial PRIMARY KEY, what text NOT NULL);
CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit(what) VALUES ('order ' || NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
CREATE FUNCTION order_total(c int) RETURNS numeric LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum(total), 0) FROM orders WHERE customer_id = c $$;
CREATE VIEW big_orders AS SELECT id, customer_id, total FROM orders WHERE total > 100;
CREATE SEQUENCE invoice_no START 1000 INCREMENT 7;
CREATE TABLE sales.regions (code char(2) PRIMARY KEY, label text);
COMMENT ON TABLE customers IS 'people who buy';
INSERT INTO customers (name, m, tags, score, ratio, born, seen)
SELECT 'Zoë ' || g || ' 🚀 ' || repeat('ü', g % 5), (ARRAY['sad','ok','happy'])[1 + g % 3]::mood,
       ARRAY['t' || g, 'ß'], g * 1.123456, g / 3.0, DATE '1990-01-01' + g,
       TIMESTAMPTZ '2026-03-01 12:00:00+02' + g * INTERVAL '1 hour'
  FROM generate_series(1, 60) g;
INSERT INTO customers (name, tags) VALUES ('nulls', NULL);
INSERT INTO orders (customer_id, total, doc, raw, blob, note)
SELECT 1 + g % 60, g * 2.5, jsonb_build_object('g', g, 'k', ARRAY[g, g + 1]),
       ('{"raw": ' || g || '}')::json, decode(md5(g::text), 'hex') || '\x00ff'::bytea,
       CASE WHEN g % 10 = 0 THEN NULL ELSE E'line\nbreak \t tab ' || g END
  FROM generate_series(1, 400) g;
SELECT nextval('invoice_no'), nextval('invoice_no');
INSERT INTO sales.regions VALUES ('EU', 'Europe'), ('NA', 'North America');
"""


def pg_make_rich(name: str) -> None:
    with pg_connect(name) as conn:
        conn.execute(PG_RICH)


def pg_snapshot(name: str, **kw: Any) -> dict[str, Any]:
    """Schema (columns, constraints, indexes, triggers, functions, views, enums, sequences)
    and every row of every table, ordered, as text (``kw``: another server or user)."""
    with pg_connect(name, **kw) as conn:
        q = lambda sql: [tuple(r) for r in conn.execute(sql).fetchall()]  # noqa: E731
        tables = [
            r[0]
            for r in q(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1"
            )
        ]
        data = {t: q(f"SELECT t::text FROM {t} t ORDER BY 1") for t in tables}
        return {
            "columns": q(
                "SELECT table_schema, table_name, column_name, data_type, udt_name, "
                "column_default, is_nullable, is_identity FROM information_schema.columns "
                "WHERE table_schema NOT IN ('pg_catalog','information_schema') ORDER BY 1,2,3"
            ),
            "constraints": q(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace::regnamespace::text "
                "NOT IN ('pg_catalog','information_schema') ORDER BY 1,2"
            ),
            "indexes": q(
                "SELECT schemaname, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname NOT IN ('pg_catalog') ORDER BY 1,2"
            ),
            "triggers": q(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE NOT tgisinternal ORDER BY 1"
            ),
            "functions": q(
                "SELECT proname, pg_get_functiondef(p.oid) FROM pg_proc p "
                "WHERE pronamespace = 'public'::regnamespace ORDER BY 1"
            ),
            "views": q(
                "SELECT viewname, definition FROM pg_views WHERE schemaname='public' ORDER BY 1"
            ),
            "enums": q(
                "SELECT enumtypid::regtype::text, enumlabel FROM pg_enum ORDER BY 1, enumsortorder"
            ),
            "sequences": q(
                "SELECT schemaname, sequencename, last_value, increment_by "
                "FROM pg_sequences ORDER BY 1,2"
            ),
            "comments": q("SELECT obj_description('customers'::regclass)"),
            "data": data,
        }


# -- MariaDB -----------------------------------------------------------------------
def my_connect(database: str | None = None, **kw: Any) -> Any:
    import pymysql

    params = {**MY, **kw}
    return pymysql.connect(
        database=database, autocommit=True, connect_timeout=5, charset="utf8mb4", **params
    )


def my_available() -> bool:
    try:
        my_connect().close()
        return True
    except Exception:
        return False


def my_exec(database: str | None, *statements: str, **kw: Any) -> list[tuple[Any, ...]]:
    """Run ``statements`` in order; the rows of the last one (``kw`` reach my_connect)."""
    conn = my_connect(database, **kw)
    try:
        rows: list[tuple[Any, ...]] = []
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                rows = list(cur.fetchall())
        return rows
    finally:
        conn.close()


def my_create(name: str) -> None:
    my_exec(None, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")


def my_drop(name: str) -> None:
    my_exec(None, f"DROP DATABASE IF EXISTS `{name}`")


def my_exists(name: str) -> bool:
    return bool(my_exec(None, f"SHOW DATABASES LIKE '{name}'"))


MY_RICH = [
    """CREATE TABLE customers (
        id INT AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(200) NOT NULL UNIQUE,
        mood ENUM('sad','ok','happy') NOT NULL DEFAULT 'ok',
        flags SET('a','b','c'),
        score DECIMAL(20,6),
        ratio DOUBLE,
        born DATE,
        seen DATETIME(6),
        stamp TIMESTAMP NULL,
        CHECK (score IS NULL OR score >= 0)
    ) ENGINE=InnoDB""",
    """CREATE TABLE orders (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        customer_id INT NOT NULL,
        total DECIMAL(12,2),
        doc JSON,
        blob_col LONGBLOB,
        note TEXT,
        KEY orders_customer (customer_id),
        CONSTRAINT orders_fk FOREIGN KEY (customer_id) REFERENCES customers(id)
    ) ENGINE=InnoDB""",
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100) NOT NULL)",
    """CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW
        INSERT INTO audit(what) VALUES (CONCAT('order ', NEW.id))""",
    """CREATE FUNCTION order_total(c INT) RETURNS DECIMAL(14,2) READS SQL DATA
        RETURN (SELECT COALESCE(SUM(total), 0) FROM orders WHERE customer_id = c)""",
    "CREATE PROCEDURE touch_audit() MODIFIES SQL DATA DELETE FROM audit WHERE id < 0",
    "CREATE VIEW big_orders AS SELECT id, customer_id, total FROM orders WHERE total > 100",
    "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO "
    "DELETE FROM audit WHERE id < 0",
    """INSERT INTO customers (name, mood, flags, score, ratio, born, seen, stamp)
       SELECT CONCAT('Zoë ', seq, ' 🚀 ', REPEAT('ü', seq % 5)),
              ELT(1 + seq % 3, 'sad', 'ok', 'happy'),
              'a,c', seq * 1.123456, seq / 3.0, DATE '1990-01-01' + INTERVAL seq DAY,
              TIMESTAMP '2026-03-01 12:00:00.123456' + INTERVAL seq HOUR,
              TIMESTAMP '2026-03-01 12:00:00' + INTERVAL seq MINUTE
         FROM seq_1_to_60""",
    "INSERT INTO customers (name) VALUES ('nulls')",
    """INSERT INTO orders (customer_id, total, doc, blob_col, note)
       SELECT 1 + seq % 60, seq * 2.5, JSON_OBJECT('g', seq, 'k', JSON_ARRAY(seq, seq + 1)),
              UNHEX(CONCAT(MD5(seq), '00FF')),
              IF(seq % 10 = 0, NULL, CONCAT('line\nbreak \t tab '' quote ', seq))
         FROM seq_1_to_400""",
    "DELETE FROM orders WHERE id > 395",  # a gap so AUTO_INCREMENT != max(id) + 1
]


def my_make_rich(name: str) -> None:
    my_exec(name, *MY_RICH)


def my_snapshot(name: str) -> dict[str, Any]:
    """SHOW CREATE of every table/view/trigger/routine/event, AUTO_INCREMENT values,
    and every row of every base table ordered by primary key."""
    conn = my_connect(name)
    try:
        with conn.cursor() as cur:

            def q(sql: str) -> list[tuple[Any, ...]]:
                cur.execute(sql)
                return [tuple(r) for r in cur.fetchall()]

            full = q("SHOW FULL TABLES")
            base = sorted(r[0] for r in full if r[1] == "BASE TABLE")
            views = sorted(r[0] for r in full if r[1] == "VIEW")
            return {
                "tables": {t: q(f"SHOW CREATE TABLE `{t}`")[0][1] for t in base},
                "views": {v: q(f"SHOW CREATE VIEW `{v}`")[0][1] for v in views},
                "auto_increment": q(
                    "SELECT table_name, auto_increment FROM information_schema.TABLES "
                    f"WHERE table_schema = '{name}' ORDER BY 1"
                ),
                "triggers": q(
                    "SELECT trigger_name, event_manipulation, event_object_table, action_statement,"
                    " action_timing FROM information_schema.TRIGGERS "
                    f"WHERE trigger_schema = '{name}' ORDER BY 1"
                ),
                "routines": q(
                    "SELECT routine_name, routine_type, routine_definition, dtd_identifier "
                    f"FROM information_schema.ROUTINES WHERE routine_schema = '{name}' ORDER BY 1"
                ),
                "events": q(
                    "SELECT event_name, event_definition, interval_value, interval_field, starts "
                    f"FROM information_schema.EVENTS WHERE event_schema = '{name}' ORDER BY 1"
                ),
                "data": {t: q(f"SELECT * FROM `{t}` ORDER BY 1") for t in base},
            }
    finally:
        conn.close()


class Listener:
    """A TCP listener on a free 127.0.0.1 port that counts the connections it accepts
    (and closes them at once): proves that nothing was sent to "another server"."""

    def __init__(self) -> None:
        import threading

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()


def pg_cluster_init(base: Path, auth: str = "trust") -> dict[str, str]:
    """initdb a throwaway PostgreSQL cluster under ``base`` (as user postgres), not started.

    Returns its port, data directory and pg_ctl; start/stop with :func:`pg_cluster_ctl`.
    """
    import os
    import shutil
    import subprocess

    initdb = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))))
    os.chmod(base, 0o755)
    shutil.chown(base, "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(initdb), "-D", str(base / "data"), "-A", auth]
        + ["-U", "postgres"],
        check=True,
        capture_output=True,
    )
    return {
        "port": str(closed_port()),
        "data": str(base / "data"),
        "base": str(base),
        "pg_ctl": str(initdb.parent / "pg_ctl"),
    }


def pg_cluster_ctl(cluster: dict[str, str], action: str) -> None:
    """``pg_ctl start`` (waits until it accepts connections) or ``stop`` (immediate)."""
    import subprocess

    argv = ["runuser", "-u", "postgres", "--", cluster["pg_ctl"], "-D", cluster["data"], "-w"]
    if action == "start":
        argv += ["-l", f"{cluster['base']}/log", "-o"]
        argv += [f"-c listen_addresses=127.0.0.1 -p {cluster['port']} -k {cluster['base']}"]
    else:
        argv += ["-m", "immediate"]
    subprocess.run([*argv, action], check=action == "start", capture_output=True)
