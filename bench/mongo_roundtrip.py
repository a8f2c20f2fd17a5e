"""MongoDB dump/restore through db-backup vs the bare wire reads/writes, in one run.

    .venv/bin/python bench/mongo_roundtrip.py [--docs 200000] [--url mongodb://HOST:PORT]

Without --url it starts nx-27017 on a free loopback port. No mongodump exists
here, so the reference ("plain") pipelines are the least any dump or restore
through the same server must do:

- dump reference: ``find_raw_batches`` of every collection into /dev/null;
- restore reference: ``insert_many`` of the same RawBSONDocuments straight
  from memory into a scratch database.

It prints wall times, the ratios db-backup/reference, sizes (raw tar,
zstd-3 object, largest staged collection) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymongo  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402

from db_backup.connectors.base import RestoreRequest, RestoreSource  # noqa: E402
from db_backup.connectors.mongodb.logical import MongoConnector  # noqa: E402
from db_backup.manifest import Manifest, StoredObject  # noqa: E402
from db_backup.pipeline import DumpSink  # noqa: E402
from tests.mongo_helpers import assert_same_collection, load_shop, start_nx  # noqa: E402

SPLIT = {"orders": 0.6, "customers": 0.25, "events": 0.15}


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def reference_read(db: Any) -> int:
    """Bytes of every collection read as raw batches and thrown away."""
    return sum(len(b) for name in SPLIT for b in db[name].find_raw_batches())


def reference_write(src: Any, dst: Any) -> float:
    """Insert the same raw documents, already in memory, into ``dst``."""
    docs = {n: [RawBSONDocument(b) for b in _raw(src, n)] for n in SPLIT}
    start = time.perf_counter()
    for name, items in docs.items():
        for i in range(0, len(items), 10_000):
            dst[name].insert_many(items[i : i + 10_000], ordered=True)
    return time.perf_counter() - start


def _raw(db: Any, name: str) -> list[bytes]:
    return [doc.raw for batch in db[name].find_raw_batches() for doc in _split(batch)]


def _split(batch: bytes) -> list[RawBSONDocument]:
    out, pos = [], 0
    while pos < len(batch):
        size = int.from_bytes(batch[pos : pos + 4], "little")
        out.append(RawBSONDocument(batch[pos : pos + size]))
        pos += size
    return out


def _source(sink: DumpSink, tables: dict[str, int]) -> RestoreSource:
    staged = sink.objects[0]
    keys = ("part", "format", "size", "sha256", "raw_size", "raw_sha256")
    obj = StoredObject(key=staged.filename, **{k: getattr(staged, k) for k in keys})
    now = datetime.now(UTC)
    manifest = Manifest(
        backup_id="20260101T000000Z",
        name="bench",
        engine="mongodb",
        source="bench",
        started_at=now,
        finished_at=now,
        objects=[obj],
        tables=tables,
    )
    return RestoreSource(manifest=manifest, staged={obj.key: staged.path})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mongo-bench-"))
    proc = None
    try:
        url = args.url
        if url is None:
            proc, url = start_nx(work)
        client: Any = pymongo.MongoClient(url)
        for name in ("bench", "bench_ref", "bench_restored"):
            client.drop_database(name)
        counts = {n: int(args.docs * share) for n, share in SPLIT.items()}
        load_s, _ = _timed(lambda: load_shop(client.bench, **counts))
        ref_read_s, ref_bytes = _timed(lambda: reference_read(client.bench))
        sink = DumpSink(work / "staging")
        sink.staging.mkdir()
        dump_s, result = _timed(lambda: MongoConnector(f"{url}/bench").dump(sink))
        ref_write_s = reference_write(client.bench, client.bench_ref)
        target = MongoConnector(f"{url}/bench_restored")
        source = _source(sink, result.tables)
        restore_s, _ = _timed(lambda: target.restore(source, RestoreRequest()))
        compared = sum(
            assert_same_collection(client.bench, client.bench_restored, n) for n in SPLIT
        )
        obj = sink.objects[0]
        largest = max(s["bytes"] for s in result.extra["collections"].values())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"documents            {sum(result.tables.values())} (compared: {compared})")
        print(f"load (insert_many)   {load_s:.1f} s")
        print(f"dump reference read  {ref_read_s:.2f} s  ({ref_bytes / 1e6:.1f} MB of BSON)")
        print(f"db-backup dump       {dump_s:.2f} s  ratio {dump_s / ref_read_s:.2f}x")
        print(f"restore reference    {ref_write_s:.2f} s")
        print(f"db-backup restore    {restore_s:.2f} s  ratio {restore_s / ref_write_s:.2f}x")
        print(f"round trip           {dump_s + restore_s:.2f} s (dump + restore)")
        print(
            f"sizes  tar {obj.raw_size / 1e6:.2f} MB -> zstd-3 {obj.size / 1e6:.2f} MB"
            f" ({obj.raw_size / obj.size:.1f}x); largest staged collection {largest / 1e6:.2f} MB"
        )
        print(f"peak RSS             {rss:.0f} MiB")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
