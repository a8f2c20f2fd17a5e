"""Prune against a real store: plan, apply, deletion order, orphans, unreadable manifests,
and a prune running while a backup of the same name is being written.

Every test takes the ``store`` fixture; add a backend to ``STORES`` (S3, GCS, Azure on their
emulators) and the whole file runs against it too.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db_backup.catalog import list_backups
from db_backup.checks.records import CheckRecord, record_check
from db_backup.connectors.base import RestoreRequest, RestoreSource
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.errors import ConfigError, StorageError
from db_backup.manifest import Manifest, StoredObject, manifest_key
from db_backup.read import download_verified
from db_backup.retention.policy import Policy
from db_backup.retention.prune import apply_plan, plan_prune
from db_backup.storage.base import Storage
from db_backup.storage.local import LocalStorage
from tests.backup_helpers import make_backup, verify_manifest_objects
from tests.sqlite_helpers import dump_rows, make_shop

DAY = timedelta(days=1)
NOW = datetime.now(UTC).replace(microsecond=0)

# backend name -> factory(tmp_path) -> Storage. Other backends plug in here.
STORES: dict[str, Callable[[Path], Storage]] = {
    "local": lambda tmp: LocalStorage(tmp / "store"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return STORES[request.param](tmp_path)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop.db", rows=200)


def dated(store: Storage, shop: Path, days_ago: list[int], name: str = "shop") -> list[Manifest]:
    return [make_backup(store, name, shop, NOW - d * DAY) for d in days_ago]


def keys(store: Storage, prefix: str = "") -> set[str]:
    return {o.key for o in store.list(prefix)}


def restore_rows(store: Storage, manifest: Manifest, dest: Path) -> dict[str, list[tuple]]:
    staging = dest.parent / f"staging-{manifest.backup_id}"
    staging.mkdir()
    staged = {o.key: download_verified(store, o, staging) for o in manifest.objects}
    SqliteConnector(dest).restore(RestoreSource(manifest, staged), RestoreRequest())
    return dump_rows(dest)


def age(path: Path, hours: float) -> None:
    when = (datetime.now(UTC) - timedelta(hours=hours)).timestamp()
    os.utime(path, (when, when))


def test_dry_run_plans_but_deletes_nothing(store: Storage, shop: Path):
    made = dated(store, shop, [5, 4, 3, 2, 1])
    before = keys(store)
    plan = plan_prune(store, "shop", Policy(keep_last=2), NOW)
    assert [d.backup_id for d in plan.removals] == [m.backup_id for m in made[:3]][::-1]
    assert all(plan.size_of(d.backup_id) > 0 for d in plan.decisions)
    assert keys(store) == before


def test_apply_removes_exactly_the_planned_backups(store: Storage, shop: Path, tmp_path: Path):
    made = dated(store, shop, [5, 4, 3, 2, 1])
    plan = plan_prune(store, "shop", Policy(keep_last=2), NOW)
    result = apply_plan(store, plan, hooks=[])
    assert sorted(result.removed) == sorted(m.backup_id for m in made[:3])
    assert result.errors == []
    assert [m.backup_id for m in list_backups(store, "shop")] == [m.backup_id for m in made[3:]]
    for gone in made[:3]:
        assert keys(store, f"shop/{gone.backup_id}/") == set()
    # What is kept still restores to the source's data.
    for i, kept in enumerate(made[3:]):
        assert restore_rows(store, kept, tmp_path / f"r{i}.db") == dump_rows(shop)
    assert result.freed_bytes == sum(plan.size_of(b) for b in result.removed)


class RecordingStorage(LocalStorage):
    """A real local store that records deletions and can refuse some."""

    def __init__(self, root: Path, refuse: Callable[[str], bool] = lambda k: False) -> None:
        super().__init__(root)
        self.deleted: list[str] = []
        self.refuse = refuse

    def delete(self, key: str) -> None:
        if self.refuse(key):
            raise StorageError(f"storage path {key}: simulated outage")
        super().delete(key)
        self.deleted.append(key)


def test_manifest_is_deleted_before_the_objects(tmp_path: Path, shop: Path):
    store = RecordingStorage(tmp_path / "store")
    made = dated(store, shop, [3, 2, 1])
    record_check(store, _record(made[0], "passed"))
    apply_plan(store, plan_prune(store, "shop", Policy(keep_last=1), NOW), hooks=[])
    for m in made[:2]:
        mine = [k for k in store.deleted if k.startswith(f"shop/{m.backup_id}/")]
        assert mine[0] == manifest_key("shop", m.backup_id)
        assert set(mine[1:]) >= {o.key for o in m.objects}
    assert any("/checks/" in k for k in store.deleted)  # drill records go with the backup


def test_failed_object_deletion_leaves_an_orphan_not_a_backup(tmp_path: Path, shop: Path):
    store = RecordingStorage(tmp_path / "store", refuse=lambda k: k.endswith(".zst"))
    made = dated(store, shop, [2, 1])
    result = apply_plan(store, plan_prune(store, "shop", Policy(keep_last=1), NOW), hooks=[])
    assert result.removed == [made[0].backup_id]
    assert len(result.errors) == 1 and "simulated outage" in result.errors[0]
    # Not listed (no manifest) even though its object is still there ...
    assert [m.backup_id for m in list_backups(store, "shop")] == [made[1].backup_id]
    assert keys(store, f"shop/{made[0].backup_id}/") == {made[0].objects[0].key}
    # ... and a later prune, once the store works and the window has passed, removes it.
    store.refuse = lambda k: False
    later = plan_prune(store, "shop", Policy(keep_last=1), NOW + 2 * DAY)
    assert [o.backup_id for o in later.orphans] == [made[0].backup_id]
    apply_plan(store, later, hooks=[])
    assert keys(store, f"shop/{made[0].backup_id}/") == set()


def test_manifest_that_cannot_be_deleted_keeps_every_object(tmp_path: Path, shop: Path):
    store = RecordingStorage(tmp_path / "store", refuse=lambda k: k.endswith("manifest.json"))
    made = dated(store, shop, [2, 1])
    result = apply_plan(store, plan_prune(store, "shop", Policy(keep_last=1), NOW), hooks=[])
    assert result.removed == [] and len(result.errors) == 1
    assert [m.backup_id for m in list_backups(store, "shop")] == [m.backup_id for m in made]


def test_unreadable_manifest_is_skipped_and_its_objects_stay(store: Storage, shop: Path):
    made = dated(store, shop, [4, 3, 2, 1])
    broken = made[0]
    store.put_bytes(manifest_key("shop", broken.backup_id), b"{not json")
    before = keys(store, f"shop/{broken.backup_id}/")
    plan = plan_prune(store, "shop", Policy(keep_last=1), NOW)
    assert len(plan.warnings) == 1 and broken.backup_id in plan.warnings[0]
    assert broken.backup_id not in {d.backup_id for d in plan.decisions}
    apply_plan(store, plan, hooks=[])
    assert keys(store, f"shop/{broken.backup_id}/") == before
    assert [m.backup_id for m in list_backups(store, "shop")] == [made[-1].backup_id]


def test_old_orphans_are_removed_young_ones_kept(tmp_path: Path, shop: Path):
    store = LocalStorage(tmp_path / "store")
    dated(store, shop, [1])
    old_id, young_id = "20200101T000000Z", (NOW - timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    store.put_bytes(f"shop/{old_id}/shop.sqlite3.zst", b"x" * 100)
    age(tmp_path / "store" / "shop" / old_id / "shop.sqlite3.zst", 48)
    store.put_bytes(f"shop/{young_id}/shop.sqlite3.zst", b"y" * 100)
    partial_old = tmp_path / "store" / "shop" / "x.zst.partial-aaaa1111"
    partial_young = tmp_path / "store" / "shop" / "y.zst.partial-bbbb2222"
    partial_old.write_bytes(b"p")
    partial_young.write_bytes(b"q")
    age(partial_old, 30)
    plan = plan_prune(store, "shop", Policy(keep_last=1), NOW)
    assert [o.backup_id for o in plan.orphans] == [old_id]
    assert [o.backup_id for o in plan.young_orphans] == [young_id]
    assert [p.key for p in plan.partials] == ["shop/x.zst.partial-aaaa1111"]
    result = apply_plan(store, plan, hooks=[])
    assert result.orphans_removed == [old_id]
    assert keys(store, f"shop/{old_id}/") == set()
    assert keys(store, f"shop/{young_id}/") == {f"shop/{young_id}/shop.sqlite3.zst"}
    assert not partial_old.exists() and partial_young.exists()


def test_orphan_that_gained_a_manifest_is_not_deleted(tmp_path: Path, shop: Path):
    """The plan saw no manifest; by the time of deletion the backup has committed."""
    store = LocalStorage(tmp_path / "store")
    m = dated(store, shop, [3])[0]
    mkey = manifest_key("shop", m.backup_id)
    data = store.get_bytes(mkey)
    store.delete(mkey)
    for o in store.list(f"shop/{m.backup_id}/"):
        age(tmp_path / "store" / o.key, 72)
    dated(store, shop, [1])
    plan = plan_prune(store, "shop", Policy(keep_last=1), NOW)
    assert [o.backup_id for o in plan.orphans] == [m.backup_id]
    store.put_bytes(mkey, data)  # the slow backup commits now
    result = apply_plan(store, plan, hooks=[])
    assert result.orphans_removed == []
    assert m.backup_id in [b.backup_id for b in list_backups(store, "shop")]


def test_keys_outside_backup_prefixes_are_never_touched(store: Storage, shop: Path):
    made = dated(store, shop, [3, 2, 1])
    shared = "shop/_chunks/ab/abcdef"  # e.g. an incremental chunk store's data
    store.put_bytes(shared, b"chunk")
    store.put_bytes("shop/notes.txt", b"keep me")
    store.put_bytes("other/20200101T000000Z/x.zst", b"other name")
    # A manifest that references an object outside its own prefix (a shared chunk).
    extra = made[0].model_copy(
        update={
            "objects": [
                *made[0].objects,
                StoredObject(
                    key=shared,
                    part="chunk",
                    format="raw",
                    size=5,
                    sha256="0" * 64,
                    raw_size=5,
                    raw_sha256="0" * 64,
                ),
            ]
        }
    )
    store.put_bytes(manifest_key("shop", made[0].backup_id), extra.to_json())
    seen: list[tuple[list[str], int]] = []
    hook = lambda s, plan, result: seen.append((result.removed, len(plan.decisions)))  # noqa: E731
    result = apply_plan(store, plan_prune(store, "shop", Policy(keep_last=1), NOW), hooks=[hook])
    assert made[0].backup_id in result.removed
    assert store.get_bytes(shared) == b"chunk"  # left for the chunk store's GC hook
    assert store.exists("shop/notes.txt") and store.exists("other/20200101T000000Z/x.zst")
    assert seen == [(result.removed, 3)]


def _record(m: Manifest, outcome: str) -> CheckRecord:
    return CheckRecord(
        kind="drill",
        name=m.name,
        backup_id=m.backup_id,
        checked_at=datetime.now(UTC),
        outcome=outcome,  # type: ignore[arg-type]
        problems=[] if outcome == "passed" else ["table orders: 1 rows restored, manifest says 2"],
    )


def test_backup_with_failed_drill_is_not_counted(store: Storage, shop: Path):
    made = dated(store, shop, [4, 3, 2, 1])
    record_check(store, _record(made[-1], "failed"))
    plan = plan_prune(store, "shop", Policy(keep_last=1), NOW)
    by_id = {d.backup_id: d for d in plan.decisions}
    assert by_id[made[-2].backup_id].reasons == ("last (1 of 1)", "newest successful backup")
    failed = by_id[made[-1].backup_id]
    assert failed.keep and "last drill failed" in failed.reasons[0]
    assert [d.backup_id for d in plan.removals] == [made[1].backup_id, made[0].backup_id]


def test_policy_that_keeps_nothing_is_refused(store: Storage, shop: Path):
    dated(store, shop, [1])
    with pytest.raises(ConfigError, match="keeps nothing"):
        plan_prune(store, "shop", Policy(), NOW)
    assert len(list_backups(store, "shop")) == 1


def test_other_names_are_not_affected(store: Storage, shop: Path):
    dated(store, shop, [3, 2, 1], name="shop")
    others = dated(store, shop, [3, 2, 1], name="shop2")
    apply_plan(store, plan_prune(store, "shop", Policy(keep_last=1), NOW), hooks=[])
    assert [m.backup_id for m in list_backups(store, "shop2")] == [m.backup_id for m in others]


# Concurrency: prune while a backup of the same name is being written ------------------
def test_prune_during_a_backup_loses_nothing(store: Storage, shop: Path, tmp_path: Path):
    """Deterministic interleaving: the backup has uploaded its data, not yet its manifest."""
    old = dated(store, shop, [3, 2, 1])
    uploaded, pruned = threading.Event(), threading.Event()
    new: list[Manifest] = []

    def pause(backup_id: str) -> None:
        uploaded.set()
        assert pruned.wait(60)

    worker = threading.Thread(
        target=lambda: new.append(make_backup(store, "shop", shop, before_manifest=pause))
    )
    worker.start()
    assert uploaded.wait(60)
    plan = plan_prune(store, "shop", Policy(keep_last=1), datetime.now(UTC))
    result = apply_plan(store, plan, hooks=[])
    pruned.set()
    worker.join(60)
    assert len(new) == 1, "the backup failed while prune ran"
    assert [o.backup_id for o in plan.young_orphans] == [new[0].backup_id]
    assert result.orphans_removed == []
    assert sorted(result.removed) == sorted(m.backup_id for m in old[:2])
    listed = [m.backup_id for m in list_backups(store, "shop")]
    assert listed == [old[2].backup_id, new[0].backup_id]
    assert verify_manifest_objects(store, new[0]) == []
    assert restore_rows(store, new[0], tmp_path / "new.db") == dump_rows(shop)


def _write_rows(db: Path, n: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO events(kind) VALUES (?)", (f"round {n}",))


def test_prune_loop_races_backup_loop(store: Storage, shop: Path, tmp_path: Path):
    """Free-running: backups and applied prunes interleave as the scheduler likes."""
    made: list[Manifest] = []
    removed: set[str] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def backups() -> None:
        try:
            for i in range(8):
                _write_rows(shop, i)
                made.append(make_backup(store, "shop", shop))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def prunes() -> Iterator[None]:
        while not done.is_set():
            plan = plan_prune(store, "shop", Policy(keep_last=2), datetime.now(UTC))
            result = apply_plan(store, plan, hooks=[])
            assert result.errors == [] and result.orphans_removed == []
            removed.update(result.removed)
            yield

    worker = threading.Thread(target=backups)
    worker.start()
    for _ in prunes():
        pass
    worker.join(120)
    assert errors == []
    assert len(made) == 8
    listed = list_backups(store, "shop")
    # Every backup is either still listed and whole, or was removed by a policy decision.
    assert {m.backup_id for m in made} == {m.backup_id for m in listed} | removed
    assert removed.isdisjoint(m.backup_id for m in listed)
    for m in listed:
        assert verify_manifest_objects(store, m) == []
    # The newest backup survived every prune and restores the final data.
    assert listed[-1].backup_id == made[-1].backup_id
    assert restore_rows(store, listed[-1], tmp_path / "final.db") == dump_rows(shop)
    # No object is left behind for removed backups.
    for backup_id in removed:
        assert keys(store, f"shop/{backup_id}/") == set()
