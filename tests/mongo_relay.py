"""MongoDB's own tools (mongodump, mongorestore, bsondump 100.8.0) against nx-27017.

Two test helpers:

* :func:`extract_tools` unpacks ``../shared/tools/mongo-tools-100.8.0-linux-amd64.tar.zst``
  (see that folder's README) into a directory, once per session (a fixture calls it).
* :class:`WireRelay`, a loopback relay in front of nx-27017 that makes it look like the
  server the tools expect:

  - ``buildInfo`` replies get the ``versionArray`` nx-27017 leaves out (mongorestore stops
    without it);
  - collection names nx-27017 refuses (``a+b``, ``a b``, ``é``) are mapped to names it
    accepts: requests carrying a client-side name get the stored one, and
    ``listCollections`` replies give the client-side name back. Document data is never
    rewritten (data sections pass through byte for byte), so what mongodump and our
    connector read through the relay is exactly what nx-27017 holds.

Only OP_MSG is rewritten; the legacy handshake (OP_QUERY/OP_REPLY) passes through.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson

OP_MSG = 2013
CHECKSUM_PRESENT = 1
TOOLS_NAME = "mongo-tools-100.8.0-linux-amd64.tar.zst"
# ../shared/tools beside the main checkout, ../../shared/tools beside a worktree in wt/
_ROOT = Path(__file__).resolve().parents[1]
TOOLS_PLACES = (_ROOT.parent / "shared" / "tools", _ROOT.parent.parent / "shared" / "tools")
TOOLS_DIR = "mongo-tools-100.8.0"


def tools_tarball() -> Path | None:
    """The mongo-tools tarball ($DB_BACKUP_MONGO_TOOLS overrides), or None when absent."""
    override = os.environ.get("DB_BACKUP_MONGO_TOOLS")
    places = [Path(override)] if override else [p / TOOLS_NAME for p in TOOLS_PLACES]
    found = next((p for p in places if p.is_file()), None)
    return found if found and shutil.which("zstd") else None


def extract_tools(tarball: Path, dest: Path) -> Path:
    """Unpack the tools into ``dest``; the folder holding mongodump, mongorestore, bsondump."""
    subprocess.run(["tar", "-I", "zstd", "-xf", str(tarball), "-C", str(dest)], check=True)
    folder = dest / TOOLS_DIR
    for tool in ("mongodump", "mongorestore", "bsondump"):
        if not (folder / tool).is_file():
            raise FileNotFoundError(f"{tarball} has no {TOOLS_DIR}/{tool}")
    return folder


# -- the wire protocol ------------------------------------------------------------------
def read_message(sock: socket.socket) -> bytes | None:
    """One whole wire message (header included), or None at end of stream."""
    head = _read_exact(sock, 4)
    if head is None:
        return None
    length = int.from_bytes(head, "little")
    rest = _read_exact(sock, length - 4)
    return None if rest is None else head + rest


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    parts: list[bytes] = []
    while n:
        block = sock.recv(min(n, 1 << 20))
        if not block:
            return None
        parts.append(block)
        n -= len(block)
    return b"".join(parts)


def rewrite_op_msg(message: bytes, body_fn: Any) -> bytes:
    """``message`` with its body section (kind 0) passed through ``body_fn``.

    ``body_fn(raw) -> raw'`` returns the body unchanged (the same object) when it has
    nothing to do; document sequences (kind 1: inserted documents) are copied as they are.
    A checksum, if any, is dropped (its flag cleared) since the body may change.
    """
    length, request_id, response_to, opcode = struct.unpack_from("<iiii", message)
    if opcode != OP_MSG:
        return message
    (flags,) = struct.unpack_from("<I", message, 16)
    end = length - 4 if flags & CHECKSUM_PRESENT else length
    pos, sections, changed = 20, [], bool(flags & CHECKSUM_PRESENT)
    while pos < end:
        kind = message[pos]
        size = int.from_bytes(message[pos + 1 : pos + 5], "little")
        section = message[pos + 1 : pos + 1 + size]
        if kind == 0:
            new = body_fn(section)
            changed = changed or new is not section
            section = new
        sections.append(bytes([kind]) + section)
        pos += 1 + size
    if not changed:
        return message
    payload = struct.pack("<I", flags & ~CHECKSUM_PRESENT) + b"".join(sections)
    return struct.pack("<iiii", 16 + len(payload), request_id, response_to, opcode) + payload


class NameMap:
    """Client-side collection names <-> the names nx-27017 stores them under."""

    def __init__(self, names: dict[str, str]) -> None:
        self.to_stored = dict(names)
        self.to_client = {v: k for k, v in names.items()}

    def request(self, body: bytes) -> bytes:
        """Client names -> stored names anywhere in a command (filters included)."""
        if not self.to_stored:
            return body
        doc = bson.decode(body)
        new = _replace_strings(doc, self.to_stored)
        return body if new == doc else bson.encode(new)

    def reply(self, body: bytes) -> bytes:
        """Add ``versionArray`` to buildInfo; stored -> client names in listCollections."""
        doc = bson.decode(body)
        changed = False
        if "version" in doc and "versionArray" not in doc and doc.get("ok"):
            numbers = [int(p) for p in str(doc["version"]).split(".")[:3] if p.isdigit()]
            doc["versionArray"] = (numbers + [0, 0, 0, 0])[:4]
            changed = True
        cursor = doc.get("cursor")
        if isinstance(cursor, dict) and str(cursor.get("ns", "")).endswith(".listCollections"):
            for batch in ("firstBatch", "nextBatch"):
                for entry in cursor.get(batch, []):
                    name = entry.get("name")
                    if name in self.to_client:
                        entry["name"] = self.to_client[name]
                        changed = True
        return bson.encode(doc) if changed else body


def _replace_strings(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value in names:
            return names[value]
        db, dot, coll = value.partition(".")
        return f"{db}.{names[coll]}" if dot and coll in names else value
    if isinstance(value, dict):
        return {k: _replace_strings(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, names) for v in value]
    return value


class WireRelay:
    """A relay on a free loopback port in front of nx-27017 at ``127.0.0.1:upstream``."""

    def __init__(self, upstream: int, names: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.names = NameMap(names or {})
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [client, server]
            for src, dst, fn in (
                (client, server, self.names.request),
                (server, client, self.names.reply),
            ):
                threading.Thread(target=self._pump, args=(src, dst, fn), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, body_fn: Any) -> None:
        try:
            while (message := read_message(src)) is not None:
                dst.sendall(rewrite_op_msg(message, body_fn))
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def relay(upstream: int, names: dict[str, str] | None = None) -> Iterator[WireRelay]:
    """A :class:`WireRelay` for the duration of a ``with`` block."""
    r = WireRelay(upstream, names)
    try:
        yield r
    finally:
        r.close()
