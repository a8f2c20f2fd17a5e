"""Drill and prune costs, side by side with the plain shell doing the same work.

    .venv/bin/python bench/drill_prune.py [--mb 100] [--backups 1000]

1. Drill: db-backup's run_drill (download + sha256 check, zstd decode with raw sha256 check,
   restore, per-table counts, PRAGMA integrity_check) against the shell doing the same
   steps on the same stored object: sha256sum, zstd -d, sqlite3 'PRAGMA integrity_check',
   sqlite3 'SELECT count(*)' per table.
2. Prune plan: plan_prune over N backups of one name (one listing, every manifest and check
   record parsed) against `find -name manifest.json -exec cat` (reading the same manifests).

Prints seconds and the ratio (db-backup / shell). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db_backup.checks.drill import run_drill  # noqa: E402
from db_backup.checks.records import record_check  # noqa: E402
from db_backup.connectors.sqlite.logical import SqliteConnector  # noqa: E402
from db_backup.retention.policy import Policy  # noqa: E402
from db_backup.retention.prune import plan_prune  # noqa: E402
from db_backup.storage.local import LocalStorage  # noqa: E402
from tests.backup_helpers import make_backup  # noqa: E402


def build_db(path: Path, mb: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, note TEXT)")
    conn.execute("CREATE INDEX orders_customer ON orders(customer)")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT)")
    rows = mb * 1024 * 1024 // 120
    batch = 50_000
    for start in range(0, rows, batch):
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            (
                (i, i % 9973, f"order {i} for customer {i % 9973}: {os.urandom(24).hex()}")
                for i in range(start, min(rows, start + batch))
            ),
        )
    conn.executemany("INSERT INTO events(kind) VALUES (?)", [(f"e{i}",) for i in range(1000)])
    conn.commit()
    conn.close()


RUNS = 5


def summary(what: str, ours: list[float], shell: list[float]) -> None:
    """Medians of alternating runs (the machine is shared and noisy)."""
    a, b = statistics.median(ours), statistics.median(shell)
    print(f"  {what}: median db-backup {a:.3f} s, median shell {b:.3f} s, ratio {a / b:.2f}")


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def shell_drill(obj: Path, work: Path, tables: list[str]) -> None:
    db = work / "shell.db"
    subprocess.run(["sha256sum", str(obj)], check=True, capture_output=True)
    subprocess.run(["zstd", "-q", "-d", "-f", str(obj), "-o", str(db)], check=True)
    out = subprocess.run(
        ["sqlite3", str(db), "PRAGMA integrity_check"], check=True, capture_output=True
    )
    assert out.stdout.strip() == b"ok"
    for t in tables:
        subprocess.run(
            ["sqlite3", str(db), f"SELECT count(*) FROM {t}"], check=True, capture_output=True
        )
    db.unlink()


def bench_drill(work: Path, mb: int) -> None:
    db = work / "big.db"
    build_db(db, mb)
    store = LocalStorage(work / "store")
    m = make_backup(store, "big", db)
    obj = store.root / m.objects[0].key
    print(
        f"drill: database {db.stat().st_size / 1e6:.1f} MB, stored object "
        f"{obj.stat().st_size / 1e6:.1f} MB, {sum(m.tables.values())} rows"
    )

    def ours() -> None:
        staging = work / "staging"
        staging.mkdir()
        target = SqliteConnector(work).scratch_target("bench")
        try:
            report = run_drill(store, m, target, staging)
            assert report.ok, report.problems
        finally:
            target.drop()
            shutil.rmtree(staging)

    ours_s, shell_s = [], []
    for run in range(RUNS):
        a = timed(ours)
        b = timed(lambda: shell_drill(obj, work, sorted(m.tables)))
        ours_s.append(a)
        shell_s.append(b)
        print(f"  run {run + 1}: db-backup drill {a:.2f} s, shell {b:.2f} s, ratio {a / b:.2f}")
    summary("drill", ours_s, shell_s)


def bench_prune(work: Path, n: int) -> None:
    store = LocalStorage(work / "prune-store")
    db = work / "small.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (a)")
    conn.commit()
    conn.close()
    now = datetime.now(UTC)
    for i in range(n):
        m = make_backup(store, "fleet", db, now - timedelta(hours=i + 1))
        if i % 2 == 0:
            from db_backup.checks.records import CheckRecord

            record_check(
                store,
                CheckRecord(
                    kind="drill",
                    name="fleet",
                    backup_id=m.backup_id,
                    checked_at=now,
                    outcome="passed",
                ),
            )
    policy = Policy(keep_last=10, keep_daily=7, keep_weekly=4, keep_monthly=12)
    ours_s, shell_s = [], []
    for run in range(RUNS):
        plan = None

        def ours() -> None:
            nonlocal plan
            plan = plan_prune(store, "fleet", policy, now)

        a = timed(ours)
        b = timed(
            lambda: subprocess.run(
                f"find {store.root}/fleet -name manifest.json -exec cat {{}} + > /dev/null",
                shell=True,
                check=True,
            )
        )
        assert plan is not None
        ours_s.append(a)
        shell_s.append(b)
        print(
            f"  run {run + 1}: plan over {n} backups ({len(plan.removals)} to remove) "
            f"{a:.3f} s, shell reading the manifests {b:.3f} s, ratio {a / b:.2f}"
        )
    summary("prune plan", ours_s, shell_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--backups", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="db-backup-bench-") as tmp:
        work = Path(tmp)
        bench_drill(work, args.mb)
        bench_prune(work, args.backups)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
