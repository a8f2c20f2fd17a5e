"""Benchmark: `db-backup backup` of a SQLite database against the plain shell pipeline.

    .venv/bin/python bench/bench_sqlite.py --size-mb 500 [--writer] [--api-url URL]

Runs, in the same process and on the same file:
  1. baseline: sqlite3 DB '.backup out' && zstd -T0 -3 out
  2. db-backup backup --type sqlite --database DB (a real subprocess)
and prints wall times, the ratio, and the peak RSS of the db-backup process.
With --writer a second process inserts rows during the backup; the backup is
then restored and checked (integrity_check, row counts equal the manifest's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXE = str(Path(sys.executable).with_name("db-backup"))
WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=120, isolation_level=None)
print("ready", flush=True)
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO events(kind, body) VALUES (?, ?)", [("tick", "w" * 300)] * 100)
    conn.execute("COMMIT")
    time.sleep(0.005)
"""


def make_database(path: Path, size_mb: int) -> None:
    """A WAL database of about ``size_mb`` MB of orders/events-like rows."""
    if path.exists() and path.stat().st_size >= size_mb * 1024 * 1024 * 0.95:
        return
    path.unlink(missing_ok=True)
    rng = random.Random(7)
    words = [f"{w}{i}" for i, w in enumerate(["alpha", "beta", "gamma", "delta", "omega"] * 200)]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, body TEXT)")
    conn.execute("CREATE INDEX events_kind ON events(kind)")
    batch = 20000
    while path.stat().st_size < size_mb * 1024 * 1024:
        rows = [
            (rng.choice(words), " ".join(rng.choices(words, k=40)) + f" {rng.random()}")
            for _ in range(batch)
        ]
        conn.executemany("INSERT INTO events(kind, body) VALUES (?, ?)", rows)
        conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``cmd``; wall time and its own peak RSS via wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout and proc.stderr
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss, out.decode()


def baseline(db: Path, work: Path) -> float:
    out = work / "baseline.db"
    start = time.perf_counter()
    subprocess.run(["sqlite3", str(db), f".backup '{out}'"], check=True)
    subprocess.run(["zstd", "-q", "-T0", "-3", "-f", str(out), "-o", f"{out}.zst"], check=True)
    wall = time.perf_counter() - start
    out.unlink()
    Path(f"{out}.zst").unlink()
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--db", type=Path, default=None, help="database path (default: bench/out/)")
    ap.add_argument("--writer", action="store_true", help="insert rows during the backup")
    ap.add_argument("--api-url", default=os.environ.get("PREFECT_API_URL"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    db = args.db or out_dir / f"sqlite-{args.size_mb}mb.db"
    make_database(db, args.size_mb)
    size = db.stat().st_size
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    if args.api_url:
        env["PREFECT_API_URL"] = args.api_url
    work = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=out_dir))
    env["DB_BACKUP_STAGING"] = str(work / "staging")
    try:
        base = baseline(db, work)
        writer = None
        if args.writer:
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True
            )
            assert writer.stdout and writer.stdout.readline().strip() == "ready"
        try:
            cmd = [
                EXE,
                "backup",
                "--type",
                "sqlite",
                "--database",
                str(db),
                "--name",
                "bench",
                "--storage",
                str(work / "store"),
            ]
            wall, rss_kib, out = run_measured(cmd, env)
        finally:
            if writer:
                writer.kill()
                writer.wait()
        backup_id = out.strip().splitlines()[-1]
        manifest = json.loads((work / "store" / "bench" / backup_id / "manifest.json").read_text())
        flow_secs = _seconds(manifest["started_at"], manifest["finished_at"])
        print(f"database: {size / 1e6:.0f} MB ({db}), writer during backup: {args.writer}")
        print(f"baseline  sqlite3 .backup + zstd -T0 -3 : {base:7.2f} s")
        print(f"db-backup backup (whole CLI process)     : {wall:7.2f} s  ratio {wall / base:.2f}x")
        ratio = flow_secs / base
        print(f"  of which dump->upload->manifest in flow: {flow_secs:7.2f} s  ratio {ratio:.2f}x")
        print(f"  peak RSS of the db-backup process      : {rss_kib / 1024:7.1f} MiB")
        stored, logical = manifest["stored_bytes"] / 1e6, manifest["logical_bytes"] / 1e6
        print(f"  stored {stored:.1f} MB of {logical:.1f} MB")
        if args.writer:
            check_restore(env, work, backup_id, manifest)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def check_restore(env: dict[str, str], work: Path, backup_id: str, manifest: dict) -> None:
    target = work / "restored.db"
    cmd = [
        EXE,
        "restore",
        backup_id,
        "--name",
        "bench",
        "--to",
        str(target),
        "--storage",
        str(work / "store"),
    ]
    wall, rss, _ = run_measured(cmd, env)
    conn = sqlite3.connect(target)
    ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    print(
        f"restore: {wall:.2f} s, peak RSS {rss / 1024:.1f} MiB, integrity_check={ok}, "
        f"rows={rows}, manifest rows={manifest['tables']['events']}, "
        f"equal={rows == manifest['tables']['events']}"
    )


def _seconds(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
