"""Back up a generated PostgreSQL database with db-backup and with the plain pipeline.

    .venv/bin/python bench/bench_postgres.py [--size-mb 1024] [--runs 2] [--level 1]

Compares, in the same run and interleaved:
  plain   pg_dump -Fp | zstd -1 > f           (the shell pipeline a DBA would write)
  direct  db-backup's pipeline in-process     (pg_dump -Fc -Z0 -> sha256 -> zstd -> store)
  cli     db-backup backup --url ...          (whole CLI, incl. Prefect's temporary server)
and the CLI flow's own time read from its manifest. Prints wall-time ratios against
the plain pipeline and the peak RSS of the largest process (/usr/bin/time %M).
The database bench_pg_<size> is generated once (about 1 GB by default) and kept.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server_bench import compare, print_report  # noqa: E402

PSQL = ["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "root", "-v", "ON_ERROR_STOP=1"]


def sql(db: str, statement: str) -> str:
    out = subprocess.run(
        [*PSQL, "-At", "-d", db, "-c", statement], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def generate(db: str, size_mb: int) -> int:
    """Create ``db`` with mixed-type rows until it holds ``size_mb`` MB; return its size."""
    if sql("postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{db}'") == "0":
        sql("postgres", f'CREATE DATABASE "{db}"')
        sql(
            db,
            "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, kind int, "
            "amount numeric(12,2), body text, doc jsonb)",
        )
    size = int(sql(db, "SELECT pg_database_size(current_database())"))
    batch = 0
    while size < size_mb * 1_000_000:
        sql(
            db,
            "INSERT INTO events (at, kind, amount, body, doc) SELECT "
            "now() - g * interval '1 second', g % 17, (g % 100000) / 7.0, "
            "md5(g::text) || ' ' || md5((g * 7)::text) || ' event text ' || g, "
            "jsonb_build_object('g', g, 'tag', 'k' || (g % 50)) "
            "FROM generate_series(1, 500000) g",
        )
        batch += 1
        size = int(sql(db, "SELECT pg_database_size(current_database())"))
        print(f"  generated {size / 1e6:.0f} MB", file=sys.stderr)
    if batch:
        sql(db, "VACUUM ANALYZE events")
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--level", type=int, default=1, help="zstd level (plain uses -1)")
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    args = parser.parse_args()
    db = f"bench_pg_{args.size_mb}"
    size = generate(db, args.size_mb)
    url = f"postgresql://root@127.0.0.1:5432/{db}"
    plain = f"pg_dump -h 127.0.0.1 -U root -Fp -d {db} | zstd -{args.level} -q > {{out}}"
    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    try:
        report = compare(url, plain, args.runs, args.level, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.drop:
            sql("postgres", f'DROP DATABASE IF EXISTS "{db}"')
    report["database_bytes"] = size
    print_report(f"PostgreSQL {db}: {size / 1e6:.0f} MB on disk", report)


if __name__ == "__main__":
    main()
