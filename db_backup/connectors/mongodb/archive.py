"""mongodump's directory layout as a tar stream, and BSON framing checks.

A MongoDB backup is one tar stream holding, per collection,
``<db>/<collection>.metadata.json`` then ``<db>/<collection>.bson``: exactly
the files ``mongodump --out DIR`` writes under ``DIR``, so that after
``zstd -d`` and ``tar x`` the stock ``mongorestore --dir`` reads them.

Documents are never decoded: a ``.bson`` file is the server's raw batches
concatenated, and the only thing read from them is each document's int32
length prefix, to count documents and to catch truncation. Nothing here
talks to a server, so every path is testable with hand-made bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote_plus, unquote_plus

from db_backup.errors import IntegrityError
from db_backup.pipeline import COPY_CHUNK

# The server accepts documents up to 16 MiB; its internal limit adds 16 KiB.
MAX_DOCUMENT = 16 * 1024 * 1024 + 16 * 1024
MIN_DOCUMENT = 5  # int32 length + terminating NUL
MAX_METADATA = 64 * 1024 * 1024
BSON_SUFFIX = ".bson"
METADATA_SUFFIX = ".metadata.json"
_MAX_ESCAPED = 238


# -- framing -----------------------------------------------------------------
def count_documents(batch: bytes | memoryview, what: str, first: int = 0) -> int:
    """Number of whole BSON documents in ``batch``; IntegrityError when framing is broken.

    ``first`` is the index of the batch's first document within ``what``, so
    the message can say which document is bad.
    """
    view = memoryview(batch)
    pos, count, end = 0, 0, len(view)
    while pos < end:
        _check_frame(view, pos, end, what, first + count)
        pos += int.from_bytes(view[pos : pos + 4], "little")
        count += 1
    return count


def _check_frame(view: memoryview, pos: int, end: int, what: str, index: int) -> None:
    if end - pos < 4:
        raise IntegrityError(
            f"{what} is truncated: {end - pos} stray byte(s) after document {index - 1} "
            f"at byte {pos}"
        )
    size = int.from_bytes(view[pos : pos + 4], "little")
    if not MIN_DOCUMENT <= size <= MAX_DOCUMENT:
        raise IntegrityError(
            f"{what} is corrupt: document {index} at byte {pos} declares an impossible "
            f"length of {size} bytes"
        )
    if pos + size > end:
        raise IntegrityError(
            f"{what} is truncated: document {index} at byte {pos} declares {size} bytes "
            f"but only {end - pos} remain"
        )
    if view[pos + size - 1] != 0:
        raise IntegrityError(
            f"{what} is corrupt: document {index} at byte {pos} does not end with a NUL byte"
        )


def write_raw_batches(batches: Iterable[bytes], out: BinaryIO, what: str) -> tuple[int, int]:
    """Write the server's raw batches to ``out``; return (documents, bytes).

    Each batch is checked to hold whole documents before it is written, so a
    ``.bson`` file produced here is always correctly framed.
    """
    count = size = 0
    for batch in batches:
        count += count_documents(batch, what, count)
        out.write(batch)
        size += len(batch)
    return count, size


def iter_documents(stream: BinaryIO, what: str, size: int) -> Iterator[bytes]:
    """Yield each document of a ``.bson`` stream of ``size`` bytes, checking its framing.

    Raises IntegrityError naming ``what``, the document index and the byte
    offset as soon as a length prefix is impossible or runs past the end.
    """
    pos = index = 0
    while pos < size:
        head = _read_exact(stream, min(4, size - pos))
        if len(head) < 4:
            raise IntegrityError(
                f"{what} is truncated: {len(head)} stray byte(s) after document {index - 1} "
                f"at byte {pos}"
            )
        length = int.from_bytes(head, "little")
        if not MIN_DOCUMENT <= length <= MAX_DOCUMENT:
            raise IntegrityError(
                f"{what} is corrupt: document {index} at byte {pos} declares an impossible "
                f"length of {length} bytes"
            )
        if pos + length > size:
            raise IntegrityError(
                f"{what} is truncated: document {index} at byte {pos} declares {length} bytes "
                f"but only {size - pos} remain"
            )
        doc = head + _read_exact(stream, length - 4)
        if len(doc) != length:
            raise IntegrityError(f"{what} ended early inside document {index} at byte {pos}")
        if doc[-1] != 0:
            raise IntegrityError(
                f"{what} is corrupt: document {index} at byte {pos} does not end with a NUL byte"
            )
        yield doc
        pos += length
        index += 1


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        block = stream.read(n)
        if not block:
            break
        parts.append(block)
        n -= len(block)
    return b"".join(parts)


# -- names and metadata ----------------------------------------------------------
def escape_collection(name: str) -> str:
    """The file stem mongodump uses for a collection, so mongorestore reads back the same name.

    mongodump escapes with Go's ``url.QueryEscape`` (everything but letters,
    digits and ``-_.~`` as %XX, a space as ``+``), which is what mongorestore
    unescapes: ``a+b`` -> ``a%2Bb``, ``a b`` -> ``a+b``. Long names keep a
    prefix and a hash of the whole name.
    """
    escaped = quote_plus(name, safe="")
    if len(escaped) > _MAX_ESCAPED:
        digest = base64.urlsafe_b64encode(hashlib.sha1(name.encode()).digest()).rstrip(b"=")
        escaped = escaped[:208] + "%24" + digest.decode()
    return escaped


def member_name(db: str, collection: str, suffix: str) -> str:
    """Path of a collection's file inside the archive, e.g. ``shop/orders.bson``."""
    return f"{db}/{escape_collection(collection)}{suffix}"


def collection_metadata(info: Mapping[str, Any], indexes: list[Mapping[str, Any]]) -> bytes:
    """``<collection>.metadata.json`` exactly as mongodump writes it.

    Field order and omissions follow mongodump: options (omitted when empty),
    indexes (always an array), uuid (hex, only for a subtype-4 binary),
    collectionName, type; canonical extended JSON without spaces.
    """
    from bson import json_util  # bson ships with pymongo, an optional extra
    from bson.binary import Binary

    meta: dict[str, Any] = {}
    options = info.get("options") or {}
    if options:
        meta["options"] = options
    meta["indexes"] = list(indexes)
    uuid = (info.get("info") or {}).get("uuid")
    if isinstance(uuid, Binary) and uuid.subtype == 4:
        meta["uuid"] = bytes(uuid).hex()
    meta["collectionName"] = info["name"]
    if info.get("type"):
        meta["type"] = info["type"]
    text = json_util.dumps(
        meta,
        json_options=json_util.CANONICAL_JSON_OPTIONS,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return text.encode()


def parse_metadata(data: bytes, what: str) -> dict[str, Any]:
    """The metadata document of ``what``; IntegrityError when it is not mongodump's JSON."""
    from bson import json_util

    try:
        meta = json_util.loads(data.decode(), json_options=json_util.CANONICAL_JSON_OPTIONS)
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise IntegrityError(f"{what} is not valid extended JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("indexes", []), list):
        raise IntegrityError(f"{what} is not a mongodump metadata document")
    return meta


# -- writing -------------------------------------------------------------------
class ArchiveWriter:
    """Write mongodump's layout as a PAX tar stream into a forward-only writer."""

    def __init__(self, out: BinaryIO, mtime: float | None = None) -> None:
        self._mtime = int(time.time() if mtime is None else mtime)
        self._out = _Gate(out)
        self._tar = tarfile.open(  # type: ignore[call-overload]  # noqa: SIM115 - see close()
            fileobj=self._out,
            mode="w|",
            format=tarfile.PAX_FORMAT,
            bufsize=COPY_CHUNK,
            copybufsize=COPY_CHUNK,
        )

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self._out.shut = True  # a failed dump: write no end-of-archive marker
        self.close()

    def _info(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.type = size, self._mtime, kind
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        return info

    def add_directory(self, name: str) -> None:
        """A directory entry (``tar x`` creates it even for an empty database)."""
        self._tar.addfile(self._info(name, 0, tarfile.DIRTYPE))

    def add_bytes(self, name: str, data: bytes) -> None:
        """A small member held in memory (metadata)."""
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))

    def add_file(self, name: str, path: Path) -> None:
        """A member copied from a staged file, whose size is known before its header."""
        with open(path, "rb") as fh:
            self._tar.addfile(self._info(name, path.stat().st_size), fh)

    def close(self) -> None:
        """Write the end-of-archive blocks."""
        self._tar.close()


class _Gate(io.RawIOBase):
    """Forwards writes until shut, so an aborted archive never writes to a closed sink."""

    def __init__(self, out: BinaryIO) -> None:
        self._target = out
        self.shut = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if not self.shut:
            self._target.write(data)
        return len(data)


# -- reading -------------------------------------------------------------------
@dataclass
class CollectionEntry:
    """One collection found in an archive."""

    name: str
    stem: str
    metadata: dict[str, Any] = field(default_factory=dict)
    documents: int = 0
    size: int = 0
    has_data: bool = False

    @property
    def is_view(self) -> bool:
        return self.metadata.get("type") == "view"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.metadata.get("options") or {})

    @property
    def indexes(self) -> list[dict[str, Any]]:
        return list(self.metadata.get("indexes") or [])


@dataclass
class ArchiveIndex:
    """What a whole, validated archive holds: one database's collections."""

    database: str = ""
    collections: dict[str, CollectionEntry] = field(default_factory=dict)


@dataclass
class Member:
    """One archive member as it streams past: which collection, which file."""

    db: str
    stem: str
    suffix: str
    info: tarfile.TarInfo
    stream: BinaryIO

    @property
    def what(self) -> str:
        return self.info.name


def iter_members(stream: BinaryIO, what: str) -> Iterator[Member]:
    """Stream the archive's collection files in order; IntegrityError for anything else."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                member = _member(tar, info, what)
                if member is not None:
                    yield member
    except tarfile.TarError as exc:
        raise IntegrityError(f"{what} is not a readable tar archive: {exc}") from exc


def _member(tar: tarfile.TarFile, info: tarfile.TarInfo, what: str) -> Member | None:
    if info.isdir():
        return None
    parts = info.name.split("/")
    if not info.isreg() or len(parts) != 2:
        raise IntegrityError(f"{what} holds an unexpected member {info.name!r}")
    db, filename = parts
    for suffix in (METADATA_SUFFIX, BSON_SUFFIX):
        if filename.endswith(suffix) and len(filename) > len(suffix):
            fh = tar.extractfile(info)
            assert fh is not None  # a regular file always has a stream
            return Member(db, filename[: -len(suffix)], suffix, info, fh)  # type: ignore[arg-type]
    raise IntegrityError(f"{what} holds an unexpected member {info.name!r}")


def scan_archive(stream: BinaryIO, what: str) -> ArchiveIndex:
    """Read a whole archive, validating every metadata file and every document's framing.

    Nothing is inserted anywhere: this is the check that lets a restore
    refuse a damaged backup before it touches the target.
    """
    index = ArchiveIndex()
    by_stem: dict[str, CollectionEntry] = {}
    for member in iter_members(stream, what):
        if index.database and member.db != index.database:
            raise IntegrityError(
                f"{what} holds two databases ({index.database!r}, {member.db!r}); expected one"
            )
        index.database = member.db
        fallback = CollectionEntry(unquote_plus(member.stem), member.stem)
        entry = by_stem.setdefault(member.stem, fallback)
        if member.suffix == METADATA_SUFFIX:
            _read_metadata(member, entry)
        else:
            entry.has_data = True
            for _doc in iter_documents(member.stream, member.what, member.info.size):
                entry.documents += 1
            entry.size = member.info.size
    for entry in by_stem.values():
        index.collections[entry.name] = entry
    return index


def _read_metadata(member: Member, entry: CollectionEntry) -> None:
    if member.info.size > MAX_METADATA:
        raise IntegrityError(f"{member.what} is {member.info.size} bytes: too large for metadata")
    entry.metadata = parse_metadata(member.stream.read(), member.what)
    name = entry.metadata.get("collectionName")
    if isinstance(name, str) and name:
        entry.name = name


def drain(stream: BinaryIO) -> None:
    """Read ``stream`` to its end (so a verifying reader checks its digest)."""
    while stream.read(COPY_CHUNK):
        pass
