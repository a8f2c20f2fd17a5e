"""Dedup ratio vs chunk count for candidate chunk sizes, on two dumps of one database.

    python bench/measure_chunk_sizes.py FIRST.dump SECOND.dump [SECOND2.dump ...]

For each (min, avg, max) it chunks FIRST, then each SECOND, and prints the
chunk count of FIRST and the raw bytes of SECOND's chunks that FIRST lacks
(what an incremental backup would upload, before compression).
"""

from __future__ import annotations

import hashlib
import sys

from db_backup.chunks.chunking import Chunker, ChunkParams

KiB = 1024
CANDIDATES = [
    ChunkParams(16 * KiB, 64 * KiB, 256 * KiB),
    ChunkParams(64 * KiB, 256 * KiB, 2048 * KiB),
    ChunkParams(256 * KiB, 1024 * KiB, 4096 * KiB),
]


def digests(path: str, params: ChunkParams) -> list[tuple[str, int]]:
    chunker = Chunker(params)
    out: list[tuple[str, int]] = []
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            out.extend((hashlib.sha256(c).hexdigest(), len(c)) for c in chunker.feed(block))
    out.extend((hashlib.sha256(c).hexdigest(), len(c)) for c in chunker.finish())
    return out


def main() -> None:
    first, seconds = sys.argv[1], sys.argv[2:]
    for p in CANDIDATES:
        base = digests(first, p)
        have = {d for d, _ in base}
        total = sum(n for _, n in base)
        line = f"min/avg/max {p.min_size >> 10}/{p.avg_size >> 10}/{p.max_size >> 10} KiB: "
        mean = total / len(base) / KiB
        line += f"{len(base)} chunks ({mean:.0f} KiB mean) in {total / 1e6:.0f} MB"
        for s in seconds:
            cur = digests(s, p)
            new = sum(n for d, n in cur if d not in have)
            size = sum(n for _, n in cur)
            line += f" | {s}: new {new / 1e6:.1f} MB = {new / size:.2%} of {size / 1e6:.0f} MB"
        print(line, flush=True)


if __name__ == "__main__":
    main()
