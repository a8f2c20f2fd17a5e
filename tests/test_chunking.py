"""Content-defined chunking: deterministic, streaming-safe, stable after insertions."""

from __future__ import annotations

import hashlib
import random

import pytest

from db_backup.chunks.chunking import Chunker, ChunkParams, chunk_bytes
from db_backup.errors import ConfigError

SMALL = ChunkParams(min_size=2048, avg_size=8192, max_size=32768)


def sample(size: int, seed: int = 7) -> bytes:
    """Dump-like bytes: text rows with random numbers (compressible, not repetitive)."""
    rng = random.Random(seed)
    rows = []
    total = 0
    while total < size:
        row = f"{len(rows)}\t{rng.randrange(10**9)}\tcustomer {rng.randrange(5000)}\tshipped\n"
        rows.append(row)
        total += len(row)
    return "".join(rows).encode()[:size]


def digests(chunks: list[bytes]) -> list[str]:
    return [hashlib.sha256(c).hexdigest() for c in chunks]


def test_chunks_reassemble_to_the_input_within_size_limits() -> None:
    data = sample(600_000)
    chunks = chunk_bytes(data, SMALL)
    assert b"".join(chunks) == data
    assert len(chunks) > 20
    assert all(SMALL.min_size <= len(c) <= SMALL.max_size for c in chunks[:-1])


@pytest.mark.parametrize("block", [1, 777, 4096, 65536, 10_000_000])
def test_streaming_cuts_equal_whole_buffer_cuts(block: int) -> None:
    data = sample(300_000 if block == 1 else 3_000_000)
    whole = chunk_bytes(data, SMALL, block=len(data))
    assert chunk_bytes(data, SMALL, block=block) == whole


def test_same_input_same_chunks_every_time() -> None:
    data = sample(1_000_000)
    assert digests(chunk_bytes(data, SMALL)) == digests(chunk_bytes(data, SMALL))


def test_insertion_changes_only_nearby_chunks() -> None:
    data = sample(2_000_000)
    middle = len(data) // 2
    edited = data[:middle] + b"INSERTED ROW 42\tnew\n" * 5 + data[middle:]
    before = digests(chunk_bytes(data, SMALL))
    after = digests(chunk_bytes(edited, SMALL))
    new = [d for d in after if d not in set(before)]
    assert len(before) > 150
    assert 1 <= len(new) <= 3  # only the chunk(s) around the insertion point differ
    assert after[: len(after) // 3] == before[: len(after) // 3]
    assert after[-len(after) // 3 :] == before[-len(after) // 3 :]


def test_empty_stream_has_no_chunks() -> None:
    chunker = Chunker(SMALL)
    assert chunker.feed(b"") == []
    assert chunker.finish() == []


@pytest.mark.parametrize(
    "params",
    [
        ChunkParams(min_size=10, avg_size=8192, max_size=32768),
        ChunkParams(min_size=8192, avg_size=4096, max_size=32768),
        ChunkParams(min_size=2048, avg_size=8192, max_size=64 * 1024 * 1024),
    ],
)
def test_bad_chunk_sizes_are_refused(params: ChunkParams) -> None:
    with pytest.raises(ConfigError, match="chunk"):
        Chunker(params)
