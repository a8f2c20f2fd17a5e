"""Prune: plan from the store's listing and manifests, then delete in a safe order.

:func:`plan_prune` reads; :func:`apply_plan` deletes. Both go through the
:class:`~db_backup.storage.base.Storage` protocol only (``list`` with modified
times, ``get_bytes``, ``exists``, ``delete``), so they work on every backend.

The state comes only from the store: one listing of ``<name>/``, the manifests
and the check records. There is no side file that could drift.

Safety rules:

* a removed backup loses its **manifest first**, then its objects, so a
  half-pruned backup is never listed as restorable (what is left is an orphan
  that a later prune removes);
* only keys under the backup's own prefix ``<name>/<id>/`` are deleted. Objects
  a manifest references elsewhere (shared chunks of an incremental store) are
  left to the ``after_prune`` hooks, which run after every applied prune;
* an id whose manifest cannot be read is skipped with a warning and none of its
  objects are deleted;
* orphans (objects under ``<name>/<id>/`` with no manifest, left by interrupted
  backups) and local ``*.partial-*`` files are removed only once their newest
  object is older than the safety window, and only if the manifest still does
  not exist at the moment of deletion: a backup being written is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from db_backup.checks.records import CheckState, checks_from_listing
from db_backup.defaults import ORPHAN_GRACE
from db_backup.errors import BackupError, ManifestError, StorageError
from db_backup.manifest import (
    MANIFEST_NAME,
    Manifest,
    backup_prefix,
    check_name,
    is_backup_id,
    manifest_key,
    parse_backup_id,
    parse_manifest,
)
from db_backup.retention.policy import Backup, Decision, Policy, select
from db_backup.storage.base import ObjectInfo, Storage

DEFAULT_ORPHAN_GRACE = ORPHAN_GRACE
SkipFn = Callable[[str, Exception], None]


@dataclass
class Orphan:
    """Objects under ``<name>/<id>/`` with no manifest (an interrupted or running backup)."""

    backup_id: str
    objects: list[ObjectInfo]
    newest: datetime

    @property
    def size(self) -> int:
        """Bytes held by the orphan's objects."""
        return sum(o.size for o in self.objects)


@dataclass
class PrunePlan:
    """What a prune would do, and why; nothing is deleted yet."""

    name: str
    store: str
    policy: Policy
    now: datetime
    orphan_grace: timedelta
    decisions: list[Decision]
    objects: dict[str, list[ObjectInfo]]
    manifests: dict[str, Manifest] = field(default_factory=dict)
    orphans: list[Orphan] = field(default_factory=list)
    young_orphans: list[Orphan] = field(default_factory=list)
    partials: list[ObjectInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def removals(self) -> list[Decision]:
        """Backups the policy removes."""
        return [d for d in self.decisions if not d.keep]

    def size_of(self, backup_id: str) -> int:
        """Bytes stored under one backup's prefix."""
        return sum(o.size for o in self.objects.get(backup_id, []))


@dataclass
class PruneResult:
    """What an applied prune deleted."""

    removed: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    partials_removed: list[str] = field(default_factory=list)
    deleted_objects: int = 0
    freed_bytes: int = 0
    errors: list[str] = field(default_factory=list)


# A hook a caller may run after an applied prune (tests observe the result with one).
AfterPrune = Callable[[Storage, PrunePlan, PruneResult], None]


def _group(listing: Iterable[ObjectInfo], name: str) -> dict[str, list[ObjectInfo]]:
    """Objects of ``<name>/<id>/...`` by id; keys of any other shape are left alone."""
    groups: dict[str, list[ObjectInfo]] = {}
    for info in listing:
        parts = info.key.split("/")
        if len(parts) >= 3 and parts[0] == name and is_backup_id(parts[1]):
            groups.setdefault(parts[1], []).append(info)
    return groups


def _read_manifest(storage: Storage, name: str, backup_id: str) -> Manifest:
    key = manifest_key(name, backup_id)
    manifest = parse_manifest(storage.get_bytes(key), f"{storage.describe()}/{key}")
    if manifest.name != name or manifest.backup_id != backup_id:
        raise ManifestError(f"manifest {key} names {manifest.name}/{manifest.backup_id}")
    return manifest


def _newest(backup_id: str, objects: Sequence[ObjectInfo]) -> datetime:
    """The latest sign of life of an id: its newest object, or the id's own time."""
    times = [o.modified for o in objects if o.modified is not None]
    return max([parse_backup_id(backup_id), *times])


def plan_prune(
    storage: Storage,
    name: str,
    policy: Policy,
    now: datetime,
    orphan_grace: timedelta = DEFAULT_ORPHAN_GRACE,
) -> PrunePlan:
    """Decide what to delete from one listing of ``<name>/``; deletes nothing."""
    check_name(name)  # also refuses the reserved '_'/'.' prefixes (no leading punctuation)
    policy.validate()
    listing = list(storage.list(f"{name}/"))
    groups = _group(listing, name)
    warnings: list[str] = []

    def warn(key: str, exc: Exception) -> None:
        warnings.append(f"skipped {key}: {exc}")

    checks = checks_from_listing(storage, listing, warn)
    manifests, orphan_groups = _split(storage, name, groups, warn)
    backups = [_as_backup(m, checks.get((name, m.backup_id))) for m in manifests]
    plan = PrunePlan(
        name=name,
        store=storage.describe(),
        policy=policy,
        now=now,
        orphan_grace=orphan_grace,
        decisions=select(backups, policy, now) if backups else [],
        objects={m.backup_id: groups[m.backup_id] for m in manifests},
        manifests={m.backup_id: m for m in manifests},
        warnings=warnings,
    )
    _place_orphans(plan, orphan_groups)
    plan.partials = _old_partials(storage, name, now, orphan_grace)
    return plan


def _split(
    storage: Storage, name: str, groups: dict[str, list[ObjectInfo]], warn: SkipFn
) -> tuple[list[Manifest], dict[str, list[ObjectInfo]]]:
    """Readable manifests, and the ids that have no manifest at all."""
    manifests: list[Manifest] = []
    orphans: dict[str, list[ObjectInfo]] = {}
    for backup_id, objects in sorted(groups.items()):
        if not any(o.key == manifest_key(name, backup_id) for o in objects):
            orphans[backup_id] = objects
            continue
        try:
            manifests.append(_read_manifest(storage, name, backup_id))
        except (ManifestError, StorageError) as exc:
            warn(manifest_key(name, backup_id), exc)  # its objects stay: not accounted for
    return manifests, orphans


def _as_backup(manifest: Manifest, state: CheckState | None) -> Backup:
    note = state.failure() if state else ""
    return Backup(manifest.backup_id, manifest.created_at, counted=not note, note=note)


def _place_orphans(plan: PrunePlan, groups: dict[str, list[ObjectInfo]]) -> None:
    for backup_id, objects in groups.items():
        orphan = Orphan(backup_id, objects, _newest(backup_id, objects))
        old = plan.now - orphan.newest >= plan.orphan_grace
        (plan.orphans if old else plan.young_orphans).append(orphan)


def _old_partials(storage: Storage, name: str, now: datetime, grace: timedelta) -> list[ObjectInfo]:
    """Leftover temporary files of interrupted writes, for stores that have them."""
    partials = storage.list_partials(f"{name}/")
    return [p for p in partials if p.modified is not None and now - p.modified >= grace]


def apply_plan(storage: Storage, plan: PrunePlan, hooks: Sequence[AfterPrune] = ()) -> PruneResult:
    """Delete what ``plan`` removes: manifest first, then objects; then orphans; then hooks.

    A deletion that fails is recorded in ``errors`` and the rest goes on; what
    is left behind has no manifest and is removed by a later prune.
    """
    result = PruneResult()
    for decision in plan.removals:
        _remove_backup(storage, plan, decision.backup_id, result)
    for orphan in plan.orphans:
        _remove_orphan(storage, plan, orphan, result)
    for partial in plan.partials:
        if _delete(storage, partial.key, result):
            result.partials_removed.append(partial.key)
            result.freed_bytes += partial.size
    for hook in hooks:
        hook(storage, plan, result)
    return result


def _delete(storage: Storage, key: str, result: PruneResult) -> bool:
    try:
        storage.delete(key)
    except BackupError as exc:
        result.errors.append(f"could not delete {key}: {exc}")
        return False
    result.deleted_objects += 1
    return True


def _remove_backup(storage: Storage, plan: PrunePlan, backup_id: str, result: PruneResult) -> None:
    """Manifest first: from that moment the backup is no longer listed or restorable."""
    name, mkey = plan.name, manifest_key(plan.name, backup_id)
    if not _unchanged(storage, plan, backup_id, result):
        return
    if not _delete(storage, mkey, result):
        return  # still listed as a backup, so leave every object in place
    result.removed.append(backup_id)
    result.freed_bytes += sum(o.size for o in plan.objects.get(backup_id, []) if o.key == mkey)
    for info in sorted(storage.list(backup_prefix(name, backup_id)), key=lambda o: o.key):
        if _delete(storage, info.key, result):
            result.freed_bytes += info.size


def _unchanged(storage: Storage, plan: PrunePlan, backup_id: str, result: PruneResult) -> bool:
    """True when the manifest is still the one the plan decided on (ids are never reused,
    but a second prune running at the same time may already have removed it)."""
    try:
        current = _read_manifest(storage, plan.name, backup_id)
    except BackupError as exc:
        if not storage.exists(manifest_key(plan.name, backup_id)):
            return False  # already removed by someone else: nothing to do
        result.errors.append(f"backup {plan.name}/{backup_id} left alone: {exc}")
        return False
    if current != plan.manifests.get(backup_id):
        result.errors.append(f"backup {plan.name}/{backup_id} changed since the plan; left alone")
        return False
    return True


def _remove_orphan(storage: Storage, plan: PrunePlan, orphan: Orphan, result: PruneResult) -> None:
    """Re-check just before deleting: a manifest or a fresh object means a live backup."""
    prefix = backup_prefix(plan.name, orphan.backup_id)
    if storage.exists(prefix + MANIFEST_NAME):
        return
    current = list(storage.list(prefix))
    if plan.now - _newest(orphan.backup_id, current) < plan.orphan_grace:
        return
    for info in current:
        if _delete(storage, info.key, result):
            result.freed_bytes += info.size
    result.orphans_removed.append(orphan.backup_id)
