"""Keep only chosen tables of a mariadb-dump / mysqldump stream.

The dump of one database (comments on, as db-backup always runs it) is a
header, then sections each opened by a three-line comment::

    --
    -- Table structure for table `orders`
    --

then the footer that restores the session settings. A table's section runs
from its "Table structure" title through its "Dumping data" section and the
triggers that follow the data. The filter keeps the header, the chosen
tables' sections and the footer; views, routines and events are left out of
a selective restore. Data lines cannot be mistaken for a title: mariadb-dump
escapes newlines inside values, so no value starts a line with ``-- ``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

TABLE_TITLES = (b"-- Table structure for table `", b"-- Dumping data for table `")
OTHER_TITLES = (
    b"-- Temporary table structure for view `",
    b"-- Temporary view structure for view `",
    b"-- Final view structure for view `",
    b"-- Dumping events for database ",
    b"-- Dumping routines for database ",
)
FOOTER_START = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;"


def title_table(line: bytes) -> tuple[bool, str | None]:
    """(is a section title, table name or None) for one line."""
    for prefix in TABLE_TITLES:
        if line.startswith(prefix):
            quoted = line[len(prefix) :].rstrip(b"\r\n")
            return True, quoted[:-1].replace(b"``", b"`").decode("utf-8", "replace")
    return (any(line.startswith(p) for p in OTHER_TITLES), None)


def filter_tables(lines: Iterable[bytes], tables: set[str]) -> Iterator[bytes]:
    """The dump's lines with only ``tables`` kept (header and footer always kept)."""
    keep = True
    pending: bytes | None = None
    for line in lines:
        if pending is not None:
            is_title, name = title_table(line)
            if is_title:
                keep = name in tables if name is not None else False
            if keep:
                yield pending
                yield line
            pending = None
            continue
        if line in (b"--\n", b"--\r\n"):
            pending = line
            continue
        if line.startswith(FOOTER_START):
            keep = True
        if keep:
            yield line
    if pending is not None and keep:
        yield pending


class IterReader(io.RawIOBase):
    """A readable binary stream over an iterator of byte strings."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def filtered_stream(source: BinaryIO, tables: set[str]) -> BinaryIO:
    """A readable stream of ``source`` (a dump) holding only ``tables``."""
    return io.BufferedReader(IterReader(filter_tables(source, tables)), 1024 * 1024)  # type: ignore[arg-type, return-value]
