"""The connector interface: one implementation per database engine.

A connector knows how to dump its database into a :class:`DumpSink`, how to
restore a verified backup into its database, and how to describe the data it
holds (tables and row counts, integrity check) for drills. Connectors import
no Prefect and hold no secrets in anything they return.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from db_backup.manifest import Manifest, StoredObject
from db_backup.pipeline import DecodeLayer, DumpSink, open_decoded


@dataclass
class DumpResult:
    """What a connector learned while dumping, recorded in the manifest."""

    server_version: str
    tool: str
    tool_version: str
    tables: dict[str, int]
    consistency: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestoreRequest:
    """What to restore: all tables (``tables=None``) or a subset."""

    tables: list[str] | None = None
    force: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestoreResult:
    """What a restore wrote."""

    target: str
    tables: list[str]


@dataclass
class RestoreSource:
    """A backup whose objects are downloaded to staging and already verified."""

    manifest: Manifest
    staged: dict[str, Path]
    decode_layers: list[DecodeLayer] = field(default_factory=list)

    def parts(self) -> list[StoredObject]:
        """The manifest's objects, in dump order."""
        return list(self.manifest.objects)

    def part(self, name: str) -> StoredObject:
        """The object holding ``name`` (e.g. 'database', 'table:orders')."""
        for obj in self.manifest.objects:
            if obj.part == name:
                return obj
        raise KeyError(name)

    @contextlib.contextmanager
    def open(self, obj: StoredObject) -> Iterator[BinaryIO]:
        """The decoded dump bytes of ``obj``, checked against raw sha256 at EOF."""
        with open_decoded(
            self.staged[obj.key], obj.key, obj.raw_size, obj.raw_sha256, self.decode_layers
        ) as stream:
            yield stream


class Connector(Protocol):
    """Dump, restore and inspect one database."""

    engine: str

    def describe(self) -> str:
        """Where the data lives, for messages and manifests; never a password."""
        ...

    def ping(self) -> None:
        """Raise SourceError unless the database can be read."""
        ...

    def dump(self, sink: DumpSink) -> DumpResult:
        """Write a consistent dump into ``sink``; every byte streamed."""
        ...

    def restore(self, source: RestoreSource, request: RestoreRequest) -> RestoreResult:
        """Restore ``source`` into this connector's database.

        Raises TargetError before writing anything when the target holds data
        that the restore would replace and ``request.force`` is false.
        """
        ...

    def check_target(self, manifest: Manifest, request: RestoreRequest) -> None:
        """Refuse, before any download, a restore this target could not take (TargetError)."""
        ...

    def row_counts(self) -> dict[str, int]:
        """Rows per table of the live database."""
        ...

    def check(self) -> list[str]:
        """Problems found by the engine's own integrity check (empty when healthy)."""
        ...

    def drop(self) -> None:
        """Remove the database entirely (used for scratch drill targets only)."""
        ...
