"""Check records (drill / verify results next to a backup) and the reports built from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db_backup import reports
from db_backup.checks.records import (
    CheckRecord,
    check_key,
    drill_fields,
    latest_checks,
    record_check,
    verify_backup_objects,
)
from db_backup.errors import ManifestError
from db_backup.retention.policy import Policy
from db_backup.retention.prune import plan_prune
from db_backup.storage.local import LocalStorage
from tests.backup_helpers import make_backup
from tests.sqlite_helpers import make_shop

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)


def rec(backup_id: str, kind: str, outcome: str, at: datetime) -> CheckRecord:
    return CheckRecord(
        kind=kind,  # type: ignore[arg-type]
        name="shop",
        backup_id=backup_id,
        checked_at=at,
        outcome=outcome,  # type: ignore[arg-type]
        problems=[] if outcome == "passed" else [f"{kind} problem"],
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_latest_record_of_each_kind_wins(store: LocalStorage):
    bid = "20260115T020000Z"
    for i, outcome in enumerate(["failed", "passed"]):
        record_check(store, rec(bid, "drill", outcome, T0 + timedelta(hours=i)))
    record_check(store, rec(bid, "verify", "failed", T0 + timedelta(hours=5)))
    state = latest_checks(store, "shop")[("shop", bid)]
    assert state.drill is not None and state.drill.ok
    assert state.verify is not None and not state.verify.ok
    assert state.failure() == "last verify failed at 2026-01-15T07:00:00Z: verify problem"
    assert drill_fields(state) == {
        "last_drill_at": "2026-01-15T03:00:00Z",
        "last_drill_ok": True,
        "last_verify_at": "2026-01-15T07:00:00Z",
        "last_verify_ok": False,
    }
    assert drill_fields(None)["last_drill_ok"] is None


def test_record_keys_sort_by_time_and_stay_under_the_backup():
    early = check_key("shop", "20260115T020000Z", "drill", T0)
    late = check_key("shop", "20260115T020000Z", "drill", T0 + timedelta(microseconds=1))
    assert early < late
    assert early.startswith("shop/20260115T020000Z/checks/") and early.endswith("-drill.json")


def test_unreadable_record_is_reported_and_not_trusted(store: LocalStorage):
    bid = "20260115T020000Z"
    key = record_check(store, rec(bid, "drill", "passed", T0))
    store.put_bytes(key, b"garbage")
    skipped: list[str] = []
    state = latest_checks(store, "shop", on_skip=lambda k, e: skipped.append(k))[("shop", bid)]
    assert skipped == [key]
    assert state.failure().startswith("check record unreadable")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", "unknown format_version"),
        (b'{"format_version": 9}', "unknown format_version"),
        (b'{"format_version": 1, "kind": "drill"}', "invalid"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_records_are_read_strictly(store: LocalStorage, data: bytes, message: str):
    from db_backup.checks.records import parse_check

    with pytest.raises(ManifestError, match=message):
        parse_check(data, "x")


def test_verify_lists_every_damaged_object(store: LocalStorage, tmp_path: Path):
    m = make_backup(store, "shop", make_shop(tmp_path / "shop.db", rows=20))
    assert verify_backup_objects(store, m).ok
    (store.root / m.objects[0].key).write_bytes(b"short")
    outcome = verify_backup_objects(store, m)
    assert not outcome.ok and "is 5 bytes but the manifest says" in outcome.problems[0]
    store.delete(m.objects[0].key)
    assert "missing" in verify_backup_objects(store, m).problems[0]
    md = reports.verify_markdown("shop", "st", [outcome])
    assert "0 ok, 1 failed" in md and "**FAILED**" in md


def test_prune_report_shows_orphans_and_reasons(store: LocalStorage, tmp_path: Path):
    shop = make_shop(tmp_path / "shop.db", rows=20)
    now = datetime.now(UTC)
    make_backup(store, "shop", shop, now - timedelta(days=2))
    make_backup(store, "shop", shop, now - timedelta(days=1))
    store.put_bytes("shop/20200101T000000Z/x.zst", b"abc")
    later = datetime.now(UTC) + timedelta(seconds=1)  # after the orphan's object was written
    plan = plan_prune(store, "shop", Policy(keep_last=1), later, orphan_grace=timedelta(0))
    rows = reports.prune_rows(plan)
    assert [r["action"] for r in rows] == ["keep", "remove", "remove"]
    assert rows[2]["reasons"] == ["orphan older than 0 h"]
    md = reports.prune_markdown(plan, None)
    assert "dry run (nothing deleted)" in md and "newest successful backup" in md
    assert reports.artifact_key("prune", "Shop_DB.v2") == "prune-shop-db-v2"
