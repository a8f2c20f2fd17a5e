"""The streaming pipeline between a connector and the store.

A connector writes its dump into a :class:`DumpSink`; every byte passes once
through sha256 (raw), zstd, optional further encodings (encryption), sha256
(stored) and into a staging file. Memory stays bounded by the compressor's
window whatever the dump size; staging holds only the encoded bytes.

On the way back, :func:`open_decoded` turns a verified staged object into a
readable stream of the original dump, checking the raw sha256 at EOF.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from db_backup.errors import ChecksumMismatch, IntegrityError, StagingError, StorageError

DEFAULT_LEVEL = 3
COPY_CHUNK = 1024 * 1024
ProgressFn = Callable[[int], None]
# An encoding layer: takes the writable stream below it, returns the one to write into.
EncodeLayer = Callable[[BinaryIO], BinaryIO]
DecodeLayer = Callable[[BinaryIO], BinaryIO]


@dataclass
class StagedObject:
    """A dump part, encoded and staged on local disk, ready to upload."""

    part: str
    filename: str
    format: str
    path: Path
    encoding: list[str]
    size: int
    sha256: str
    raw_size: int
    raw_sha256: str


class _HashingFile(io.RawIOBase):
    """Write-through wrapper that counts and hashes what reaches the file."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        self._raw.write(view)
        return len(view)


class _RawWriter(io.RawIOBase):
    """What connectors write into: hashes the raw dump, feeds the encoder chain."""

    def __init__(self, below: BinaryIO, progress: ProgressFn | None) -> None:
        self._below = below
        self._progress = progress
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        self._below.write(view)
        if self._progress:
            self._progress(len(view))
        return len(view)


@dataclass
class DumpSink:
    """Where a connector writes its dump parts.

    ``level`` and ``threads`` tune zstd (threads=-1 uses every core, good for a
    file source; 0 keeps one core free for a database server on the same host).
    ``layers`` are extra encodings applied after compression (encryption),
    each given as (name, factory). ``allow_damaged``: the caller accepts a
    source that fails the engine's own consistency check (recorded in the
    manifest) instead of failing the dump.
    """

    staging: Path
    level: int = DEFAULT_LEVEL
    threads: int = 0
    layers: list[tuple[str, EncodeLayer]] = field(default_factory=list)
    progress: ProgressFn | None = None
    objects: list[StagedObject] = field(default_factory=list)
    allow_damaged: bool = False

    @contextlib.contextmanager
    def open(self, part: str, filename: str, fmt: str) -> Iterator[BinaryIO]:
        """Yield a writable stream for one dump part; staged on clean exit only.

        The part is written to ``<filename>.zst.partial`` and renamed when the
        connector's block ends without an exception; on any error the partial
        file is removed, so a retry starts clean.
        """
        stored_name = f"{filename}.zst"
        final = self.staging / stored_name
        tmp = self.staging / f"{stored_name}.partial"
        final.unlink(missing_ok=True)
        try:
            with open(tmp, "wb") as fh:
                hashed = _HashingFile(fh)
                raw = self._chain(hashed)
                yield raw  # type: ignore[misc]
                raw.close()
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StagingError(f"staging file {tmp}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.objects.append(
            StagedObject(
                part=part,
                filename=stored_name,
                format=fmt,
                path=final,
                encoding=["zstd", *(name for name, _ in self.layers)],
                size=hashed.size,
                sha256=hashed.digest.hexdigest(),
                raw_size=raw.size,
                raw_sha256=raw.digest.hexdigest(),
            )
        )

    def _chain(self, hashed: _HashingFile) -> _RawWriter:
        """Build raw -> zstd -> layers... -> hashed file, bottom up."""
        bottom: BinaryIO = hashed  # type: ignore[assignment]
        wrapped: list[BinaryIO] = []
        for _name, layer in reversed(self.layers):
            bottom = layer(bottom)
            wrapped.append(bottom)
        params = zstandard.ZstdCompressionParameters.from_level(
            self.level, threads=self.threads, write_checksum=True
        )
        compressor = zstandard.ZstdCompressor(compression_params=params)
        zwriter = compressor.stream_writer(bottom, closefd=False)  # type: ignore[arg-type]
        # Close order on finish: zstd first (flushes its frame), then each layer downwards.
        return _ClosingRawWriter(zwriter, self.progress, [zwriter, *reversed(wrapped)])


class _ClosingRawWriter(_RawWriter):
    """Raw writer that, on close, flushes every encoder layer from top to bottom."""

    def __init__(self, below: BinaryIO, progress: ProgressFn | None, chain: list[BinaryIO]) -> None:
        super().__init__(below, progress)
        self._layers = chain
        self._done = False

    def close(self) -> None:
        if not self._done:
            self._done = True
            for layer in self._layers:
                layer.close()
        super().close()


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(COPY_CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def sha256_stream(stream: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of everything readable from ``stream``."""
    digest = hashlib.sha256()
    size = 0
    while block := stream.read(COPY_CHUNK):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def check_digest(what: str, size: int, sha256: str, want_size: int, want_sha256: str) -> None:
    """Raise IntegrityError / ChecksumMismatch naming ``what`` when the figures differ."""
    if size != want_size:
        raise IntegrityError(
            f"{what} is {size} bytes but the manifest says {want_size} (truncated or altered)"
        )
    if sha256 != want_sha256:
        raise ChecksumMismatch(
            f"{what} has sha256 {sha256[:16]}… but the manifest says {want_sha256[:16]}…"
        )


class _VerifyingReader(io.RawIOBase):
    """Readable stream that hashes the decoded bytes and checks them at EOF."""

    def __init__(self, inner: BinaryIO, what: str, size: int, sha256: str) -> None:
        self._inner = inner
        self._what = what
        self._want = (size, sha256)
        self._digest = hashlib.sha256()
        self._size = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{self._what} cannot be decompressed: {exc}") from exc
        n = len(data)
        if n == 0:
            self._check()
            return 0
        buffer[:n] = data
        self._digest.update(data)
        self._size += n
        return n

    def _check(self) -> None:
        if not self._checked:
            self._checked = True
            check_digest(f"decoded {self._what}", self._size, self._digest.hexdigest(), *self._want)


@contextlib.contextmanager
def open_decoded(
    path: Path,
    what: str,
    raw_size: int,
    raw_sha256: str,
    layers: list[DecodeLayer] | None = None,
) -> Iterator[BinaryIO]:
    """Readable stream of the original dump from a staged, encoded object.

    ``layers`` undo encodings applied after compression (outermost first).
    The raw sha256 is checked when the reader reaches EOF.
    """
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StorageError(f"staged object {path} cannot be read: {exc.strerror}") from exc
    with fh:
        stream: BinaryIO = fh
        for layer in layers or []:
            stream = layer(stream)
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        verifying = _VerifyingReader(reader, what, raw_size, raw_sha256)  # type: ignore[arg-type]
        yield io.BufferedReader(verifying, COPY_CHUNK)  # type: ignore[misc]


def copy_stream(src: BinaryIO, dst: BinaryIO, chunk: int = COPY_CHUNK) -> int:
    """Copy ``src`` to ``dst`` in blocks; return the byte count."""
    total = 0
    while block := src.read(chunk):
        dst.write(block)
        total += len(block)
    return total
