"""Garbage collection of the chunk store, and the backup side of its protocol.

:func:`collect_garbage` deletes chunks that no live index references. Live
means: the index of every readable manifest, plus every index without a
manifest younger than ``grace`` (a backup still running). It never deletes a
chunk younger than ``grace``, counted from the GC's own start on the store's
clock, and it refuses to run when any manifest cannot be read (a newer
db-backup's manifest may reference chunks this one cannot see).

Encrypted backups keep their chunks in a namespace per data key
(``_chunks/k-<key id>/``) and seal their indexes. GC reads a sealed index with
the key the passphrase unlocks; without a passphrase, every chunk of a key
that any live (or in-flight) index uses is kept (reported as a problem, never
guessed), while the plain namespace and namespaces no index uses any more are
collected as usual. A wrong passphrase stops the GC before it deletes anything.

Each GC run leaves a marker ``_gc/<run>.json`` (``running`` while it works,
``finished`` after). :func:`check_concurrent_gc` is called by a backup just
before it writes its manifest: if a GC ran at the same time, it waits for it to
finish, then checks that every chunk the backup references still exists.
Together with the refresh rule in :mod:`db_backup.chunks.index` this makes
"prune + GC while a backup runs" lose nothing: either the backup's chunks are
all there, or the backup fails without a manifest (older backups untouched).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from db_backup.catalog import RESERVED_PREFIXES, list_backups
from db_backup.chunks import index as cs
from db_backup.crypto import keys as keyfiles
from db_backup.crypto.stream import DataKey, header_key_id
from db_backup.defaults import GC_GRACE
from db_backup.errors import BackupError, ConfigError, IntegrityError, ManifestError
from db_backup.manifest import is_backup_id
from db_backup.storage.base import ObjectInfo, Storage

HEARTBEAT = timedelta(seconds=30)
STALE_AFTER = timedelta(minutes=10)
WAIT_LIMIT = timedelta(minutes=30)


@dataclass
class GcReport:
    """What a GC run found and did (bytes are stored sizes)."""

    run: str
    started_at: str
    dry_run: bool
    grace_seconds: float
    backups: int = 0
    live_indexes: int = 0
    inflight_indexes: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    live_chunks: int = 0
    deleted_chunks: int = 0
    deleted_bytes: int = 0
    kept_young_chunks: int = 0
    kept_unknown_age: int = 0
    kept_locked_chunks: int = 0
    bad_chunks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """Plain dict for JSON output."""
        return asdict(self)


@dataclass
class GcPlan:
    """The decisions of a GC run, before any deletion."""

    report: GcReport
    marker: str
    start: datetime
    candidates: list[ObjectInfo]
    bad: set[str] = field(default_factory=set)


def _marker(storage: Storage, key: str, state: str, started: datetime) -> None:
    doc = {"state": state, "started_at": started.isoformat()}
    storage.put_bytes(key, json.dumps(doc).encode())


class _KeyRing:
    """The data keys GC needs for sealed indexes, unlocked on first use with ``passphrase``.

    Without a passphrase every key is 'locked' (None); a wrong one raises EncryptionError.
    """

    def __init__(self, storage: Storage, passphrase: str | None) -> None:
        self._storage = storage
        self._passphrase = passphrase
        self._keys: dict[str, DataKey] = {}

    def get(self, key_id: str) -> DataKey | None:
        if self._passphrase is None:
            return None
        if key_id not in self._keys:
            self._keys[key_id] = keyfiles.unlock_key(self._storage, key_id, self._passphrase)
        return self._keys[key_id]


def plan_garbage(
    storage: Storage,
    grace: timedelta = GC_GRACE,
    policy: cs.ChunkPolicy | None = None,
    dry_run: bool = False,
    passphrase: str | None = None,
) -> GcPlan:
    """Start a GC run: write its marker, find the unreferenced chunks older than ``grace``.

    ``passphrase`` unlocks the keys of encrypted backups' indexes; without it
    the chunks of every key still in use are all kept (see the module docstring).
    """
    policy = policy or cs.ChunkPolicy()
    if grace < policy.min_grace:
        raise ConfigError(
            f"GC grace {grace} is shorter than refresh age + longest backup "
            f"({policy.min_grace}); a running backup could lose chunks"
        )
    run = uuid.uuid4().hex[:12]
    marker = f"{cs.GC_PREFIX}{run}.json"
    start = cs.StorageClock(storage).now()
    if not dry_run:
        _marker(storage, marker, "running", start)
    report = GcReport(run, start.isoformat(), dry_run, grace.total_seconds())
    try:
        live, locked = _live_chunks(storage, start - grace, report, _KeyRing(storage, passphrase))
    except BaseException:
        if not dry_run:
            _marker(storage, marker, "finished", start)
        raise
    for key_id in sorted(locked):
        report.problems.append(
            f"kept every chunk of encryption key {key_id}: encrypted incremental backups use "
            f"it and no passphrase was given (set {keyfiles.PASSPHRASE_ENV} to collect them)"
        )
    candidates: list[ObjectInfo] = []
    bad = cs.bad_chunks(storage)
    report.bad_chunks = sorted(bad)
    if bad:
        report.problems.append(
            f"{len(bad)} chunk(s) were found corrupted by a read (first: {min(bad)}): the next "
            "backup that needs one uploads it again; older backups using them fail verify"
        )
    for info in storage.list(cs.CHUNK_PREFIX):
        report.chunks += 1
        report.chunk_bytes += info.size
        if info.key in live:
            report.live_chunks += 1
        elif cs.chunk_namespace(info.key) in locked:
            report.kept_locked_chunks += 1
        elif info.modified is None:
            report.kept_unknown_age += 1
        elif info.modified >= start - grace:
            report.kept_young_chunks += 1
        else:
            candidates.append(info)
    return GcPlan(report, marker, start, candidates, bad)


def _live_chunks(
    storage: Storage, young_after: datetime, report: GcReport, ring: _KeyRing
) -> tuple[set[str], set[str]]:
    """The storage keys of every chunk a live index references, and the key ids of
    sealed indexes that could not be read (no passphrase): their namespaces stay whole."""
    skipped: list[str] = []
    manifests = list_backups(storage, on_skip=lambda k, e: skipped.append(f"{k}: {e}"))
    if skipped:
        raise ManifestError(
            f"GC refused: {len(skipped)} manifest(s) cannot be read ({skipped[0]}); "
            "they may reference chunks"
        )
    report.backups = len(manifests)
    live: set[str] = set()
    locked: set[str] = set()
    committed: set[str] = set()
    for manifest in manifests:
        for obj in manifest.objects:
            committed.add(obj.key)
            if not obj.chunked:
                continue
            key: DataKey | None = None
            if obj.encrypted:
                key_id = keyfiles.backup_key_id(manifest) or ""
                key = ring.get(key_id)
                if key is None:
                    locked.add(key_id)
                    continue
            live.update(cs.read_index(storage, obj, key).chunk_keys())
            report.live_indexes += 1
    for info in _index_objects(storage):
        if info.key in committed or (info.modified and info.modified < young_after):
            continue
        try:
            data = storage.get_bytes(info.key)
            sealed_by = header_key_id(data)
            key = ring.get(sealed_by) if sealed_by else None
            if sealed_by and key is None:
                locked.add(sealed_by)
                continue
            live.update(cs.ChunkIndex.from_bytes(data, info.key, key).chunk_keys())
            report.inflight_indexes += 1
        except BackupError as exc:
            raise ManifestError(f"GC refused: in-flight index {info.key}: {exc}") from exc
    return live, locked


def _index_objects(storage: Storage) -> Iterable[ObjectInfo]:
    for info in storage.list(""):
        parts = info.key.split("/")
        if len(parts) != 3 or parts[0].startswith(RESERVED_PREFIXES):
            continue
        if is_backup_id(parts[1]) and parts[2].endswith(cs.INDEX_SUFFIX):
            yield info


def delete_garbage(
    storage: Storage,
    plan: GcPlan,
    recheck: bool = True,
    clock: Callable[[], datetime] | None = None,
) -> GcReport:
    """Delete the planned chunks, re-checking each one's age just before.

    A chunk re-uploaded since the plan (a backup renewed it) is kept. The GC
    marker is renewed every 30 s; if renewing lags so long that a backup may
    have judged this GC dead, the run stops deleting.
    """
    report = plan.report
    now = clock or (lambda: datetime.now(UTC))
    beat = now()
    grace = timedelta(seconds=report.grace_seconds)
    try:
        for info in plan.candidates:
            if report.dry_run:
                report.deleted_chunks += 1
                report.deleted_bytes += info.size
                continue
            if now() - beat > STALE_AFTER / 2:
                report.problems.append("stopped: marker renewal lagged; rerun gc")
                break
            if now() - beat > HEARTBEAT:
                _marker(storage, plan.marker, "running", plan.start)
                beat = now()
            if recheck:
                current = cs.lookup(storage, info.key)
                if current is None or (current.modified and current.modified >= plan.start - grace):
                    report.kept_young_chunks += 1
                    continue
            storage.delete(info.key)
            if info.key in plan.bad:
                storage.delete(cs.bad_record_key(info.key))
            report.deleted_chunks += 1
            report.deleted_bytes += info.size
    finally:
        if not report.dry_run:
            _marker(storage, plan.marker, "finished", plan.start)
    _forget_old_markers(storage, plan.start - grace)
    return report


def _forget_old_markers(storage: Storage, before: datetime) -> None:
    for info in list(storage.list(cs.GC_PREFIX)):
        if info.modified and info.modified < before and info.key.endswith(".json"):
            storage.delete(info.key)


def collect_garbage(
    storage: Storage,
    grace: timedelta = GC_GRACE,
    policy: cs.ChunkPolicy | None = None,
    dry_run: bool = False,
    passphrase: str | None = None,
) -> GcReport:
    """Delete chunks no live index references and older than ``grace``; return a report.

    Safe to run while backups run and after prune deleted manifests; safe to
    run twice. Refuses (ManifestError) when any manifest cannot be read, and
    (EncryptionError) when ``passphrase`` does not unlock a key an index needs.
    """
    plan = plan_garbage(storage, grace, policy, dry_run, passphrase)
    return delete_garbage(storage, plan)


# -- the backup side ------------------------------------------------------------


def _gc_runs(storage: Storage) -> list[tuple[ObjectInfo, dict[str, str]]]:
    runs = []
    for info in storage.list(cs.GC_PREFIX):
        if not info.key.endswith(".json"):
            continue
        try:
            doc = json.loads(storage.get_bytes(info.key))
        except (BackupError, ValueError):
            continue
        runs.append((info, doc))
    return runs


def check_concurrent_gc(
    storage: Storage,
    since: datetime | None,
    digests: list[str],
    key_id: str | None = None,
    wait_limit: timedelta = WAIT_LIMIT,
) -> int:
    """Before a backup's manifest: make sure no GC removed a chunk it references.

    ``since`` is the store time of the backup's first chunk decision. Any GC
    run still going, or finished after ``since``, counts as concurrent: wait
    for running ones (a marker not renewed for 10 minutes is a dead GC, which
    deletes nothing more), then check every referenced chunk exists. Returns
    the number of concurrent GC runs; raises IntegrityError if a chunk is gone.
    ``key_id``: the chunks are those of an encrypted backup, in that key's namespace.
    """
    if since is None:
        return 0
    waited = timedelta(0)
    while True:
        clock = cs.StorageClock(storage)
        running, concurrent = 0, 0
        for info, doc in _gc_runs(storage):
            fresh = info.modified is None or info.modified >= clock.now() - STALE_AFTER
            if doc.get("state") == "running" and fresh:
                running += 1
                concurrent += 1
            elif info.modified is None or info.modified >= since:
                concurrent += 1
        if not running or waited >= wait_limit:
            break
        cs.wait_seconds(2.0)
        waited += timedelta(seconds=2)
    if running:
        raise IntegrityError(
            f"a chunk garbage collection is still running in {storage.describe()} after "
            f"{wait_limit}; no manifest written, run the backup again later"
        )
    if concurrent:
        _require_chunks(storage, [cs.chunk_key(d, key_id) for d in digests])
    return concurrent


def _require_chunks(storage: Storage, keys: list[str]) -> None:
    with ThreadPoolExecutor(cs.DEFAULT_WORKERS) as pool:
        present = list(pool.map(storage.exists, keys))
    missing = [k for k, ok in zip(keys, present, strict=True) if not ok]
    if missing:
        raise IntegrityError(
            f"a concurrent garbage collection removed {len(missing)} chunk(s) this backup "
            f"relies on (first: {missing[0]}); no manifest written, run the backup again"
        )
