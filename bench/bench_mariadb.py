"""Back up a generated MariaDB database with db-backup and with the plain pipeline.

    .venv/bin/python bench/bench_mariadb.py [--size-mb 500] [--runs 2] [--level 1]

Compares, in the same run and interleaved:
  plain   mariadb-dump --single-transaction | zstd -1 > f
  direct  db-backup's pipeline in-process     (mariadb-dump -> sha256 -> zstd -> store)
  cli     db-backup backup --url ...          (whole CLI, incl. Prefect's temporary server)
and the CLI flow's own time read from its manifest. Prints wall-time ratios against
the plain pipeline and the peak RSS of the largest process (/usr/bin/time %M).
The database bench_my_<size> is generated once (about 500 MB by default) and kept.
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

CLIENT = ["mariadb", "-h", "127.0.0.1", "-u", "root", "--batch", "--skip-column-names"]


def sql(db: str | None, statement: str) -> str:
    out = subprocess.run(
        [*CLIENT, *([db] if db else []), "-e", statement],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def data_size(db: str) -> int:
    return int(
        sql(
            None,
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM "
            f"information_schema.TABLES WHERE table_schema = '{db}'",
        )
        or 0
    )


def generate(db: str, size_mb: int) -> int:
    """Create ``db`` with mixed-type rows until it holds ``size_mb`` MB; return its size."""
    sql(None, f"CREATE DATABASE IF NOT EXISTS `{db}`")
    sql(
        db,
        "CREATE TABLE IF NOT EXISTS events (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "at DATETIME, kind INT, amount DECIMAL(12,2), body TEXT, doc JSON) ENGINE=InnoDB",
    )
    size = data_size(db)
    while size < size_mb * 1_000_000:
        sql(
            db,
            "INSERT INTO events (at, kind, amount, body, doc) SELECT "
            "NOW() - INTERVAL seq SECOND, seq % 17, (seq % 100000) / 7.0, "
            "CONCAT(MD5(seq), ' ', MD5(seq * 7), ' event text ', seq), "
            "JSON_OBJECT('g', seq, 'tag', CONCAT('k', seq % 50)) FROM seq_1_to_500000",
        )
        sql(db, "ANALYZE TABLE events")
        size = data_size(db)
        print(f"  generated {size / 1e6:.0f} MB", file=sys.stderr)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--level", type=int, default=1, help="zstd level (plain uses -1)")
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    args = parser.parse_args()
    db = f"bench_my_{args.size_mb}"
    size = generate(db, args.size_mb)
    url = f"mysql://root@127.0.0.1:3306/{db}"
    plain = (
        f"mariadb-dump -h 127.0.0.1 -u root --single-transaction {db} "
        f"| zstd -{args.level} -q > {{out}}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-my-"))
    try:
        report = compare(url, plain, args.runs, args.level, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.drop:
            sql(None, f"DROP DATABASE IF EXISTS `{db}`")
    report["database_bytes"] = size
    print_report(f"MariaDB {db}: {size / 1e6:.0f} MB of data and indexes", report)


if __name__ == "__main__":
    main()
