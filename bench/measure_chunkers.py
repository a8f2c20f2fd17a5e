"""Measure chunking libraries on a real dump file, against the plain pipeline.

    python bench/measure_chunkers.py DUMPFILE [--mib 400]

Reads the first --mib MiB of DUMPFILE into memory once (so disk speed is out of
the figures), then times, in one run on the same bytes:
  * plain pipeline: sha256 + zstd-3 of the whole stream (what a full backup does);
  * pyfastcdc (Cython FastCDC 2020) cut points alone;
  * fastcdc (PyPI 'fastcdc', Cython build) cut points alone;
  * the chunked pipeline: pyfastcdc cut + sha256 + zstd-3 per chunk.
Prints MB/s and each chunker's speed as a ratio of the plain pipeline's.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import zstandard


def mbps(nbytes: int, secs: float) -> float:
    return nbytes / secs / 1e6


def plain(data: memoryview) -> float:
    t = time.perf_counter()
    h = hashlib.sha256()
    c = zstandard.ZstdCompressor(level=3).compressobj()
    for i in range(0, len(data), 1 << 20):
        block = data[i : i + (1 << 20)]
        h.update(block)
        c.compress(block)
    c.flush()
    return time.perf_counter() - t


def pyfastcdc_cut(data: memoryview, avg: int) -> tuple[float, int]:
    import pyfastcdc

    cdc = pyfastcdc.FastCDC(avg, min_size=avg // 4, max_size=avg * 4)
    t = time.perf_counter()
    n = sum(1 for _ in cdc.cut_buf(data))
    return time.perf_counter() - t, n


def fastcdc_cut(data: memoryview, avg: int) -> tuple[float, int]:
    from fastcdc.fastcdc_cy import fastcdc_cy

    t = time.perf_counter()
    n = sum(1 for _ in fastcdc_cy(data, min_size=avg // 4, avg_size=avg, max_size=avg * 4))
    return time.perf_counter() - t, n


def chunked_pipeline(data: memoryview, avg: int) -> float:
    import pyfastcdc

    cdc = pyfastcdc.FastCDC(avg, min_size=avg // 4, max_size=avg * 4)
    comp = zstandard.ZstdCompressor(level=3)
    whole = hashlib.sha256()
    t = time.perf_counter()
    for ch in cdc.cut_buf(data):
        whole.update(ch.data)
        hashlib.sha256(ch.data).digest()
        comp.compress(ch.data)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--mib", type=int, default=400)
    args = ap.parse_args()
    with open(args.dump, "rb") as fh:
        data = memoryview(fh.read(args.mib << 20))
    n = len(data)
    base = plain(data)
    print(f"input: {args.dump}, {n / 1e6:.0f} MB")
    print(f"plain sha256+zstd-3 pipeline: {mbps(n, base):7.1f} MB/s")
    for avg in (64 << 10, 256 << 10, 1 << 20):
        t1, c1 = pyfastcdc_cut(data, avg)
        t2, c2 = fastcdc_cut(data, avg)
        t3 = chunked_pipeline(data, avg)
        print(
            f"avg {avg >> 10:5d} KiB: pyfastcdc cut {mbps(n, t1):7.1f} MB/s ({c1} chunks, "
            f"{base / t1:.1f}x pipeline) | fastcdc cut {mbps(n, t2):7.1f} MB/s ({c2} chunks, "
            f"{base / t2:.2f}x pipeline) | chunked pipeline (pyfastcdc+sha+zstd) "
            f"{mbps(n, t3):6.1f} MB/s ({t3 / base:.2f}x plain time)"
        )


if __name__ == "__main__":
    main()
