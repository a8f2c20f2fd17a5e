"""The storage interface every backend implements.

Keys are ``/``-separated strings relative to the store's root (a directory,
a bucket prefix). Adapters promise:

* ``put_file`` / ``put_bytes`` make an object appear whole or not at all;
* ``create_exclusive`` creates a small object only if its key is absent, as
  one atomic step of the store itself (two writers racing for one key: exactly
  one gets True);
* ``list`` never shows an object that is still being written (a multipart
  upload, a ``*.partial-*`` file), and gives each object's size and, where
  the store keeps one, its modification time (prune uses it for orphans);
* errors are :class:`~db_backup.errors.StorageError` subclasses naming the key,
  with ``transient`` set only when a retry may help.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    """One object in a store."""

    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class UploadReceipt:
    """What an adapter confirmed about an upload.

    ``size`` and ``sha256`` cover the bytes read from the file and sent (the
    caller compares them with the staged digest); ``verified`` says what the
    store itself confirmed, e.g. ``s3:sha256`` or ``gcs:md5+crc32c``.
    """

    size: int
    sha256: str
    verified: str


@runtime_checkable
class Storage(Protocol):
    """put / get / list / exists / delete over one backend."""

    def describe(self) -> str:
        """A URL-like location for messages, e.g. ``s3://bucket/prefix`` (no secrets)."""
        ...

    def put_file(self, key: str, path: Path) -> UploadReceipt | None:
        """Store the file at ``path`` under ``key``, streaming, atomically.

        Cloud adapters return an :class:`UploadReceipt` of the bytes sent and of
        what the store checked; a local directory returns None.
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object (a manifest, an index) atomically."""
        ...

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create ``key`` holding ``data`` only if no object has that key.

        True when this call created it; False when the key already existed
        (its content is left as it was). The check and the write are one
        atomic step of the store (``O_EXCL``, ``If-None-Match: *``,
        ``ifGenerationMatch=0``): used to reserve backup ids.
        """
        ...

    def get_file(self, key: str, dest: Path) -> None:
        """Download ``key`` into ``dest`` (streaming); raises ObjectNotFound."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole; raises ObjectNotFound."""
        ...

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A readable binary stream of ``key``; raises ObjectNotFound."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with ``prefix``."""
        ...

    def exists(self, key: str) -> bool:
        """True when ``key`` is a complete object."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...

    def list_partials(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Leftovers of interrupted writes under ``prefix`` (none where writes are atomic)."""
        ...


def join_key(*parts: str) -> str:
    """Join key segments with single slashes."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))
