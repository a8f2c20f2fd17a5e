"""Peak RSS of the chunking sink as the dump grows (is memory bounded?).

    python bench/bench_chunk_memory.py [--gb 2]

Streams --gb GB of generated dump-like rows (unique, compressible text) through
a ChunkingSink into a local store in a temporary directory, and prints peak RSS
after each quarter, plus the in-memory index size. Bounded memory shows as a
flat RSS after the first quarter.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from db_backup.chunks.incremental import chunking_sink
from db_backup.storage.local import LocalStorage


def rows(rng: random.Random, n: int) -> bytes:
    return "".join(
        f"{rng.getrandbits(40)}\t{rng.randrange(10**6)}\tdelivered\t{rng.random():.6f}\tnote\n"
        for _ in range(n)
    ).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-chunk-mem-"))
    try:
        sink = chunking_sink(LocalStorage(work / "store"), work)
        rng = random.Random(3)
        total, target = 0, int(args.gb * 1e9)
        marks = [target * q // 4 for q in (1, 2, 3, 4)]
        t = time.perf_counter()
        with sink.open("database", "dump.sql", "sql") as out:
            while total < target:
                block = rows(rng, 20_000)
                out.write(block)
                total += len(block)
                if marks and total >= marks[0]:
                    marks.pop(0)
                    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    print(f"{total / 1e9:.2f} GB written: peak RSS {rss:.0f} MB", flush=True)
        obj = sink.objects[-1]
        secs = time.perf_counter() - t
        print(f"{obj.raw_size / 1e9:.2f} GB in {secs:.0f} s, {obj.chunk_stats.chunks} chunks, "  # type: ignore[attr-defined]
              f"index object {obj.size / 1e6:.2f} MB")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
