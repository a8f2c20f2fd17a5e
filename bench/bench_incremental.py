"""Incremental backups: uploaded bytes and wall time of a second backup, vs a full one.

    python bench/bench_incremental.py                      # SQLite, ~1 GB, through the flows
    python bench/bench_incremental.py --engine postgres --url postgresql://root@127.0.0.1/x
    python bench/bench_incremental.py --engine mariadb --url mysql://root@127.0.0.1/x
    python bench/bench_incremental.py --pg-raw postgresql://root@127.0.0.1:5432/postgres

Scenario (issue 8): an append-heavy ``orders`` table of about --rows rows; between
backups 2% new rows are appended and 0.1% of rows updated (a status change),
chosen among the newest 5% (``--updates tail``, default) or uniformly over the
table (``--updates uniform``).

Flow mode (SQLite now; PostgreSQL/MariaDB once their connectors are merged) runs,
in one process and one run: full backup, incremental #1, change, incremental #2,
full backup #2, and the plain shell pipeline (``sqlite3 .backup | zstd`` /
``pg_dump | zstd`` / ``mariadb-dump | zstd``); it prints incremental #2's
uploaded bytes / incremental #1's and its wall time / full backup #2's.

``--pg-raw`` needs no connector: it creates a database, streams ``pg_dump -Fp``
through the chunk store (:class:`ChunkingSink`) directly, for both update
patterns, and prints the same ratios against a full backup's pipeline on the same
stream (DumpSink -> re-check -> upload) and ``pg_dump | zstd -3``, in the same run.
Peak RSS of this process and the size of the in-memory chunk index are printed too.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit

NOTE = "order note: " + "x" * 60


def gb(n: float) -> str:
    return f"{n / 1e9:.3f} GB"


# -- SQLite data ---------------------------------------------------------------


def sqlite_create(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT,"
        " amount REAL, created_at INTEGER, note TEXT);"
        "CREATE INDEX orders_created ON orders(created_at);"
    )
    rng = random.Random(1)
    batch = 100_000
    for start in range(1, rows + 1, batch):
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, 'delivered', ?, ?, ?)",
            [
                (i, rng.randrange(100_000), rng.randrange(100_000) / 100, 1_700_000_000 + i,
                 f"{NOTE} {rng.getrandbits(64):x}")
                for i in range(start, min(start + batch, rows + 1))
            ],
        )  # fmt: skip
        conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def sqlite_change(path: Path, rows: int, updates: str) -> None:
    rng = random.Random(2)
    conn = sqlite3.connect(path)
    new = rows // 50
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, 'new', ?, ?, ?)",
        [
            (i, rng.randrange(100_000), rng.randrange(100_000) / 100, 1_700_000_000 + i,
             f"{NOTE} {rng.getrandbits(64):x}")
            for i in range(rows + 1, rows + new + 1)
        ],
    )  # fmt: skip
    low = 1 if updates == "uniform" else rows - rows // 20
    ids = rng.sample(range(low, rows + 1), rows // 1000)
    conn.executemany("UPDATE orders SET status = 'shipped' WHERE id = ?", [(i,) for i in ids])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


# -- PostgreSQL / MariaDB data ------------------------------------------------------

PG_CREATE = """
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL,
  amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL, note text NOT NULL);
INSERT INTO orders SELECT g, ((g::bigint*7919)%100000)::int, 'delivered',
  ((g::bigint*31)%100000)/100.0, timestamptz '2024-01-01' + g * interval '1 second',
  md5(g::text) || ' ' || md5((g*3)::text) || ' order note'
FROM generate_series(1, {rows}) g;
"""
PG_CHANGE = """
INSERT INTO orders SELECT g, ((g::bigint*7919)%100000)::int, 'new',
  ((g::bigint*31)%100000)/100.0, timestamptz '2024-01-01' + g * interval '1 second',
  md5(g::text) || ' ' || md5((g*3)::text) || ' order note'
FROM generate_series({rows} + 1, {rows} + {new}) g;
UPDATE orders SET status = 'shipped'
 WHERE id IN (SELECT {low} + (g::bigint * 48271) % {span} FROM generate_series(1, {upd}) g);
"""
MY_CREATE = """
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, status varchar(16) NOT NULL,
  amount decimal(12,2) NOT NULL, created_at datetime NOT NULL, note varchar(120) NOT NULL);
INSERT INTO orders SELECT seq, (seq*7919)%100000, 'delivered', ((seq*31)%100000)/100.0,
  '2024-01-01' + INTERVAL seq SECOND, CONCAT(md5(seq), ' ', md5(seq*3), ' order note')
FROM seq_1_to_{rows};
"""
MY_CHANGE = """
INSERT INTO orders SELECT seq, (seq*7919)%100000, 'new', ((seq*31)%100000)/100.0,
  '2024-01-01' + INTERVAL seq SECOND, CONCAT(md5(seq), ' ', md5(seq*3), ' order note')
FROM seq_{first}_to_{last};
UPDATE orders SET status = 'shipped'
 WHERE id IN (SELECT {low} + (seq * 48271) % {span} FROM seq_1_to_{upd});
"""


def change_params(rows: int, updates: str) -> dict[str, int]:
    low = 1 if updates == "uniform" else rows - rows // 20
    span = rows if updates == "uniform" else rows // 20
    new = rows // 50
    return {"rows": rows, "new": new, "first": rows + 1, "last": rows + new, "low": low,
            "span": span, "upd": rows // 1000}  # fmt: skip


def sql(engine: str, url: str, text: str, db: str | None = None) -> None:
    parts = urlsplit(url)
    host, port, user = parts.hostname or "127.0.0.1", parts.port, parts.username or "root"
    dbname = db or parts.path.strip("/")
    if engine == "postgres":
        cmd = ["psql", "-h", host, "-p", str(port or 5432), "-U", user, "-d", dbname, "-q"]
        cmd += ["-v", "ON_ERROR_STOP=1"]
    else:
        cmd = ["mariadb", "-h", host, "-P", str(port or 3306), "-u", user, dbname]
    subprocess.run(cmd, input=text.encode(), check=True)


# -- measuring -----------------------------------------------------------------------


def timed(fn, *args, **kw):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def shell_pipeline(cmd: str) -> float:
    t = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    return time.perf_counter() - t


def index_memory(chunks: int) -> int:
    """Bytes the chunk index and the per-backup dedup table take for ``chunks`` chunks."""
    import hashlib

    tracemalloc.start()
    index: list[tuple[str, int, int]] = []
    done: dict[str, int] = {}
    for i in range(chunks):
        d = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
        index.append((d, 300_000 + i, 90_000 + i))
        done[d] = 90_000 + i
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size


def report_memory(logical: int, chunks: int) -> None:
    per_gb = chunks / (logical / 1e9)
    n10 = int(per_gb * 10)
    mem = index_memory(n10)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"chunks per logical GB: {per_gb:.0f}; a 10 GB dump -> ~{n10} chunks; "
          f"in-memory index + dedup table for them (tracemalloc): {mem / 1e6:.1f} MB")  # fmt: skip
    print(f"peak RSS of this bench process: {rss / 1e6:.0f} MB")


# -- flow mode -------------------------------------------------------------------------


def flow_scenario(args: argparse.Namespace, work: Path) -> None:
    from db_backup.catalog import find_backup
    from db_backup.flows.backup import backup_database
    from db_backup.storage.local import LocalStorage

    storage = str(work / "store")
    if args.engine == "sqlite":
        db = work / "orders.db"
        print(f"creating SQLite database with {args.rows} rows ...", flush=True)
        sqlite_create(db, args.rows)
        database = str(db)
        plain = f"sqlite3 {db} '.backup {work}/plain.db' && zstd -q -3 -T0 -f {work}/plain.db"
        change = lambda: sqlite_change(db, args.rows, args.updates)  # noqa: E731
        print(f"database file: {gb(db.stat().st_size)}")
    else:
        database = args.url
        create, chg = (
            (PG_CREATE, PG_CHANGE) if args.engine == "postgres" else (MY_CREATE, MY_CHANGE)
        )
        print(f"creating {args.engine} table with {args.rows} rows ...", flush=True)
        sql(args.engine, args.url, create.format(rows=args.rows))
        params = change_params(args.rows, args.updates)
        change = lambda: sql(args.engine, args.url, chg.format(**params))  # noqa: E731
        tool = "pg_dump -Fp" if args.engine == "postgres" else "mariadb-dump --single-transaction"
        plain = f"{tool} {dump_args(args.engine, args.url)} | zstd -q -3 -T0 > {work}/plain.zst"
    store = LocalStorage(storage)

    def run(mode: str) -> tuple[object, float]:
        bid, secs = timed(backup_database, database=database, storage=storage, name="bench",
                          mode=mode, allow_shrink=True)  # fmt: skip
        return find_backup(store, "bench", str(bid)), secs

    warm = work / "warmup.db"  # the first flow run starts Prefect's server: keep it out
    sqlite_create(warm, 10)
    backup_database(database=str(warm), storage=storage, name="warmup")
    full1, t_full1 = run("full")
    inc1, t_inc1 = run("incremental")
    print("changing the data ...", flush=True)
    change()
    inc2, t_inc2 = run("incremental")
    full2, t_full2 = run("full")
    t_plain = shell_pipeline(plain)
    for label, m, t in (("full #1", full1, t_full1), ("incremental #1", inc1, t_inc1),
                        ("incremental #2", inc2, t_inc2), ("full #2", full2, t_full2)):  # fmt: skip
        print(f"{label:15s}: logical {gb(m.logical_bytes)} stored {gb(m.stored_bytes)} "  # type: ignore[attr-defined]
              f"uploaded {gb(m.uploaded_bytes)} dedup {gb(m.deduplicated_bytes)} "  # type: ignore[attr-defined]
              f"in {t:.1f} s")  # fmt: skip
    print(f"plain shell pipeline ({plain.split()[0]} | zstd): {t_plain:.1f} s")
    print(f"RESULT {args.engine} updates={args.updates}: incremental #2 uploaded / incremental #1 "
          f"uploaded = {inc2.uploaded_bytes / inc1.uploaded_bytes:.3f}; "  # type: ignore[attr-defined]
          f"wall time incremental #2 / full #2 = {t_inc2 / t_full2:.2f}; "
          f"incremental #1 / full #1 = {t_inc1 / t_full1:.2f}; full #2 / plain = "
          f"{t_full2 / t_plain:.2f}")  # fmt: skip
    chunks = inc1.extra["chunks"]["total"]  # type: ignore[attr-defined]
    report_memory(inc1.logical_bytes, chunks)  # type: ignore[attr-defined]


def dump_args(engine: str, url: str) -> str:
    p = urlsplit(url)
    if engine == "postgres":
        return f"-h {p.hostname} -p {p.port or 5432} -U {p.username or 'root'} {p.path.strip('/')}"
    return f"-h {p.hostname} -P {p.port or 3306} -u {p.username or 'root'} {p.path.strip('/')}"


# -- raw pg_dump mode -----------------------------------------------------------------


def chunk_pg_dump(url: str, dbname: str, storage_dir: Path, staging: Path):  # type: ignore[no-untyped-def]
    """Stream ``pg_dump -Fp`` of ``dbname`` into the chunk store; return stats and seconds."""
    from db_backup.chunks.incremental import chunking_sink
    from db_backup.storage.local import LocalStorage

    staging.mkdir(parents=True, exist_ok=True)
    sink = chunking_sink(LocalStorage(storage_dir), staging)
    p = urlsplit(url)
    cmd = ["pg_dump", "-Fp", "--restrict-key=bench", "-h", p.hostname or "127.0.0.1",
           "-p", str(p.port or 5432), "-U", p.username or "root", dbname]  # fmt: skip
    t = time.perf_counter()
    with (
        subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc,
        sink.open("database", "db.sql", "sql") as out,
    ):
        assert proc.stdout is not None
        while block := proc.stdout.read(1 << 20):
            out.write(block)
    if proc.returncode:
        raise SystemExit(f"pg_dump failed ({proc.returncode})")
    secs = time.perf_counter() - t
    obj = sink.objects[-1]
    return obj, secs


def full_pg_dump(url: str, dbname: str, storage_dir: Path, staging: Path) -> float:
    """What a full backup does with the same stream: DumpSink, re-check, upload. Seconds."""
    from db_backup import operations as ops
    from db_backup.pipeline import DumpSink
    from db_backup.storage.local import LocalStorage

    staging.mkdir(parents=True, exist_ok=True)
    sink = DumpSink(staging)
    p = urlsplit(url)
    cmd = ["pg_dump", "-Fp", "--restrict-key=bench", "-h", p.hostname or "127.0.0.1",
           "-p", str(p.port or 5432), "-U", p.username or "root", dbname]  # fmt: skip
    t = time.perf_counter()
    with (
        subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc,
        sink.open("database", "db.sql", "sql") as out,
    ):
        assert proc.stdout is not None
        while block := proc.stdout.read(1 << 20):
            out.write(block)
    obj = ops.verify_staged(sink.objects[-1])
    ops.upload_staged(LocalStorage(storage_dir), obj, f"full/{time.time_ns()}/db.sql.zst")
    secs = time.perf_counter() - t
    obj.path.unlink()
    return secs


def pg_raw_scenario(args: argparse.Namespace, work: Path) -> None:
    url = args.pg_raw
    base = "inc8_bench_raw"
    print(f"creating PostgreSQL database {base} with {args.rows} rows ...", flush=True)
    sql("postgres", url, f"DROP DATABASE IF EXISTS {base} WITH (FORCE)", "postgres")
    sql("postgres", url, f"DROP DATABASE IF EXISTS {base}_uni WITH (FORCE)", "postgres")
    sql("postgres", url, f"CREATE DATABASE {base}", "postgres")
    sql("postgres", url, PG_CREATE.format(rows=args.rows), base)
    sql("postgres", url, f"CREATE DATABASE {base}_uni TEMPLATE {base}", "postgres")
    last = None
    for variant, db in (("tail", base), ("uniform", f"{base}_uni")):
        store = work / f"store-{variant}"
        d = dump_args("postgres", url.rsplit("/", 1)[0] + "/" + db)
        t_plain1 = shell_pipeline(f"pg_dump -Fp {d} | zstd -q -3 > {work}/plain1.zst")
        first, t1 = chunk_pg_dump(url, db, store, work / "stage1")
        sql("postgres", url, PG_CHANGE.format(**change_params(args.rows, variant)), db)
        t_plain2 = shell_pipeline(f"pg_dump -Fp {d} | zstd -q -3 > {work}/plain2.zst")
        second, t2 = chunk_pg_dump(url, db, store, work / "stage2")
        t_full2 = full_pg_dump(url, db, work / "store-full", work / "stage-full")
        shutil.rmtree(work / "store-full", ignore_errors=True)
        s1, s2 = first.chunk_stats, second.chunk_stats
        up1 = s1.new_bytes + s1.refreshed_bytes + first.size
        up2 = s2.new_bytes + s2.refreshed_bytes + second.size
        print(f"[{variant}] dump #1 {gb(first.raw_size)} -> {s1.chunks} chunks, uploaded "
              f"{gb(up1)} in {t1:.1f} s (pg_dump|zstd -3: {t_plain1:.1f} s, "
              f"{Path(work / 'plain1.zst').stat().st_size / 1e9:.3f} GB)")  # fmt: skip
        print(
            f"[{variant}] dump #2 {gb(second.raw_size)} -> {s2.chunks} chunks, {s2.new_chunks} "
            f"new, uploaded {gb(up2)} in {t2:.1f} s (pg_dump|zstd -3: {t_plain2:.1f} s)"
        )
        print(
            f"RESULT pg-raw updates={variant}: uploaded #2 / #1 = {up2 / up1:.3f}; "
            f"chunked #2 wall / full-backup pipeline #2 ({t_full2:.1f} s) = {t2 / t_full2:.2f}; "
            f"chunked #2 wall / plain pipeline #2 = {t2 / t_plain2:.2f}; "
            f"chunked #1 / plain #1 = {t1 / t_plain1:.2f}"
        )
        last = first
        shutil.rmtree(store, ignore_errors=True)
    if last is not None:
        report_memory(last.raw_size, last.chunk_stats.chunks)
    sql("postgres", url, f"DROP DATABASE IF EXISTS {base} WITH (FORCE)", "postgres")
    sql("postgres", url, f"DROP DATABASE IF EXISTS {base}_uni WITH (FORCE)", "postgres")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engine", choices=["sqlite", "postgres", "mariadb"], default="sqlite")
    ap.add_argument("--url", help="database URL for --engine postgres/mariadb")
    ap.add_argument("--pg-raw", metavar="URL", help="raw pg_dump through the chunk store")
    ap.add_argument("--rows", type=int, default=6_000_000)
    ap.add_argument("--updates", choices=["tail", "uniform"], default="tail")
    ap.add_argument("--workdir", default=os.environ.get("DB_BACKUP_STAGING"))
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="bench-incremental-", dir=args.workdir))
    try:
        if args.pg_raw:
            pg_raw_scenario(args, work)
        else:
            if args.engine != "sqlite" and not args.url:
                sys.exit("--engine postgres/mariadb needs --url")
            flow_scenario(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
