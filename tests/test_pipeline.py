"""The streaming pipeline: what goes in comes out, stock zstd reads it, failures leave nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from db_backup.errors import ChecksumMismatch, IntegrityError, StagingError
from db_backup.pipeline import DumpSink, open_decoded, sha256_file


def write_part(sink: DumpSink, data: bytes, chunk: int = 65536) -> None:
    with sink.open("database", "dump.bin", "raw") as out:
        for i in range(0, len(data), chunk):
            out.write(data[i : i + chunk])


def test_stock_zstd_decompresses_what_the_sink_stores(tmp_path: Path) -> None:
    data = (b"INSERT INTO t VALUES (1, 'hello');\n" * 50000) + os.urandom(100000)
    sink = DumpSink(tmp_path, level=3, threads=-1)
    write_part(sink, data)
    [obj] = sink.objects
    assert obj.raw_size == len(data)
    assert obj.raw_sha256 == hashlib.sha256(data).hexdigest()
    assert (obj.size, obj.sha256) == sha256_file(obj.path)
    assert obj.size < len(data) and obj.encoding == ["zstd"]
    zstd = shutil.which("zstd")
    assert zstd, "zstd CLI is installed by scripts/services.sh"
    out = subprocess.run([zstd, "-d", "-c", str(obj.path)], capture_output=True, check=True)
    assert out.stdout == data


def test_decoded_stream_round_trips_and_checks_raw_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    sink = DumpSink(tmp_path)
    write_part(sink, data)
    [obj] = sink.objects
    with open_decoded(obj.path, "x", obj.raw_size, obj.raw_sha256) as stream:
        assert stream.read() == data
    with (
        pytest.raises(ChecksumMismatch, match="decoded x"),
        open_decoded(obj.path, "x", obj.raw_size, "0" * 64) as stream,
    ):
        stream.read()


def test_truncated_object_is_detected(tmp_path: Path) -> None:
    data = os.urandom(1024 * 1024)
    sink = DumpSink(tmp_path)
    write_part(sink, data)
    [obj] = sink.objects
    with open(obj.path, "r+b") as fh:
        fh.truncate(obj.size // 2)
    with (
        pytest.raises(IntegrityError),
        open_decoded(obj.path, "x", obj.raw_size, obj.raw_sha256) as s,
    ):
        s.read()


def test_failure_mid_dump_leaves_no_staged_file(tmp_path: Path) -> None:
    sink = DumpSink(tmp_path)
    with pytest.raises(RuntimeError), sink.open("database", "dump.bin", "raw") as out:
        out.write(b"partial data")
        raise RuntimeError("connection lost")
    assert sink.objects == []
    assert list(tmp_path.iterdir()) == []


def test_full_staging_disk_is_a_clear_error(tiny_disk: Path) -> None:
    sink = DumpSink(tiny_disk, level=1)
    with pytest.raises(StagingError, match=r"staging file .*dump.bin.zst.partial: No space left"):
        write_part(sink, os.urandom(4 * 1024 * 1024))
    assert list(tiny_disk.iterdir()) == []
