"""Backup wall time with and without encryption, side by side in one run.

    .venv/bin/python bench/bench_encryption.py                     # builds a ~1 GB SQLite db
    .venv/bin/python bench/bench_encryption.py --size-mb 500
    .venv/bin/python bench/bench_encryption.py --url postgresql://root@127.0.0.1:5432/bench

Each run does what the backup flow does, without Prefect's fixed cost:
connector dump -> sha256 -> zstd -> [AES-256-GCM frames] -> sha256 -> staging,
re-read of the staged file (checksum task), upload to a local store. The
encrypted run also pays for finding the key and one scrypt unlock (real
parameters, overlapped with the connector's start), as the flow does. Plain
and encrypted runs alternate (plain, enc, plain, enc, ...) so machine noise
hits both; the medians and their ratio are printed, with throughput in MB/s
of raw dump.
Target (issue 9): encryption costs <= 10% of the backup's wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from db_backup import operations as ops
from db_backup.connectors import connector_from_url
from db_backup.crypto import keys
from db_backup.pipeline import DumpSink, EncodeLayer
from db_backup.storage.local import LocalStorage

PASSPHRASE = "bench passphrase, not a secret"


def make_sqlite(path: Path, size_mb: int) -> Path:
    """A database of ~size_mb of order-like rows (compresses ~3-4x with zstd, like real data)."""
    if path.exists() and path.stat().st_size >= size_mb * 1024 * 1024 * 0.95:
        return path
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, sku TEXT, qty INTEGER, "
        "total REAL, status TEXT, note TEXT)"
    )
    batch = 200_000
    start = 0
    while path.stat().st_size < size_mb * 1024 * 1024:
        conn.execute(
            "WITH RECURSIVE c(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM c WHERE i < ?2) "
            "INSERT INTO orders SELECT i, 'customer-' || (i % 50021), "
            "'SKU-' || hex(randomblob(4)), abs(random() % 20), abs(random() % 1000000) / 100.0, "
            "CASE i % 4 WHEN 0 THEN 'shipped' WHEN 1 THEN 'paid' WHEN 2 THEN 'new' "
            "ELSE 'returned' END, 'delivery note ' || hex(randomblob(12)) || ' leave at door' "
            "FROM c",
            (start, start + batch - 1),
        )
        conn.commit()
        start += batch
    conn.close()
    return path


def one_backup(database: str, work: Path, encrypt: bool, run: int) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, raw bytes, stored bytes) of one backup into the bench store.

    The store's key exists already (made before the first timed run), as in
    any repository after its first encrypted backup.
    """
    store_dir, staging = work / "store", work / f"staging-{run}"
    staging.mkdir()
    store = LocalStorage(store_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    connector = connector_from_url(database)
    unlocking: contextlib.AbstractContextManager[list[tuple[str, EncodeLayer]]]
    unlocking = contextlib.nullcontext([])
    if encrypt:  # as the flow does: find the key, unlock it while the connector starts
        key_id = keys.key_for_new_backups(store, PASSPHRASE, lambda: False)
        unlocking = keys.unlocking_layers(store, key_id, PASSPHRASE)
    threads = getattr(connector, "compress_threads", 0)
    with unlocking as layers:
        sink = DumpSink(staging, level=3, threads=threads, layers=layers)
        outcome = ops.stage_dump(connector, sink)
    for obj in outcome.objects:
        ops.verify_staged(obj)
        ops.upload_staged(store, obj, f"bench/{run}/{obj.filename}")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    raw = sum(o.raw_size for o in outcome.objects)
    stored = sum(o.size for o in outcome.objects)
    shutil.rmtree(store_dir / "bench")
    shutil.rmtree(staging)
    return seconds, cpu, raw, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL or SQLite path (default: build a SQLite db)")
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the built SQLite db")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (alternating)")
    parser.add_argument("--workdir", default=os.environ.get("DB_BACKUP_STAGING"))
    args = parser.parse_args()

    base = Path(args.workdir or tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="bench-encryption-", dir=base))
    try:
        database = args.url or str(
            make_sqlite(base / f"bench-enc-{args.size_mb}mb.db", args.size_mb)
        )
        keys.create_key(LocalStorage(work / "store"), PASSPHRASE)
        one_backup(database, work, encrypt=False, run=-1)  # warm the page cache
        times: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        sizes: dict[bool, tuple[int, int]] = {}
        for run in range(args.runs):
            for encrypt in (False, True):
                secs, cpu, raw, stored = one_backup(database, work, encrypt, run * 2 + encrypt)
                times[encrypt].append(secs)
                cpus[encrypt].append(cpu)
                sizes[encrypt] = (raw, stored)
                kind = "encrypted" if encrypt else "plain    "
                print(
                    f"run {run + 1} {kind} {secs:7.2f} s wall  {cpu:7.2f} s CPU  "
                    f"{raw / secs / 1e6:7.1f} MB/s raw",
                    flush=True,
                )
        report(database, times, cpus, sizes)
        layer_speed(sizes[True][1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def layer_speed(stored: int) -> None:
    """The encryption layer alone on 256 MiB of incompressible bytes (best of 3)."""
    import io

    from db_backup.crypto.stream import DataKey

    class Null(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            return len(b)

    key, block, total = DataKey.generate(), os.urandom(128 * 1024), 256 * 1024 * 1024
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        with key.encrypt_to(Null()) as writer:  # type: ignore[arg-type]
            for _ in range(total // len(block)):
                writer.write(block)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    keys.wrap_key(key, PASSPHRASE)  # one scrypt run, as an unlock costs
    kdf = time.perf_counter() - t0
    print(
        f"encryption layer alone: {total / best / 1e6:.0f} MB/s -> {stored / (total / best):.2f} s "
        f"for this backup's {stored / 1e6:.0f} MB of compressed output; one scrypt unlock "
        f"{kdf:.2f} s"
    )


def report(
    database: str,
    times: dict[bool, list[float]],
    cpus: dict[bool, list[float]],
    sizes: dict[bool, tuple[int, int]],
) -> None:
    plain, enc = statistics.median(times[False]), statistics.median(times[True])
    cpu_plain, cpu_enc = statistics.median(cpus[False]), statistics.median(cpus[True])
    pairs = [e / p for p, e in zip(times[False], times[True], strict=True)]
    raw, stored = sizes[False]
    print(f"database: {database}")
    print(
        f"raw dump {raw / 1e6:.1f} MB, stored {stored / 1e6:.1f} MB plain, "
        f"{sizes[True][1] / 1e6:.1f} MB encrypted"
    )
    print(f"median plain     {plain:7.2f} s  {raw / plain / 1e6:7.1f} MB/s")
    print(f"median encrypted {enc:7.2f} s  {raw / enc / 1e6:7.1f} MB/s")
    print(f"per-pair wall ratios (encrypted/plain): {', '.join(f'{r:.3f}' for r in pairs)}")
    print(
        f"median CPU plain {cpu_plain:.2f} s, encrypted {cpu_enc:.2f} s "
        f"(ratio {cpu_enc / cpu_plain:.3f})"
    )
    print(
        f"encrypted / plain wall time: {enc / plain:.3f} "
        f"(encryption costs {100 * (enc / plain - 1):+.1f}%; target <= +10%)"
    )


if __name__ == "__main__":
    main()
