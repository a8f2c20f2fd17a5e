"""Restore drills: plain steps (no server) and the drill flow against the test API."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from db_backup.checks.drill import compare_counts, run_drill, summary_line
from db_backup.checks.records import latest_checks
from db_backup.connectors.scratch import default_scratch_base, open_scratch, scratch_label
from db_backup.connectors.sqlite.logical import SqliteConnector
from db_backup.errors import ConfigError, DrillFailed, TargetError, VerificationFailed
from db_backup.manifest import Manifest, manifest_key
from db_backup.storage.local import LocalStorage
from tests.backup_helpers import make_backup, read_artifact
from tests.sqlite_helpers import make_shop


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop.db", rows=300)


@pytest.fixture
def scratch_dir(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alter_object(store: LocalStorage, manifest: Manifest) -> None:
    """Flip one byte in the middle of the stored object (bit rot, tampering)."""
    path = store.root / manifest.objects[0].key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_counts(store: LocalStorage, manifest: Manifest, **counts: int) -> None:
    """A manifest whose row counts disagree with the data (a dump that lost rows)."""
    changed = manifest.model_copy(update={"tables": {**manifest.tables, **counts}})
    store.put_bytes(manifest_key(manifest.name, manifest.backup_id), changed.to_json())


def corrupt_index_db(path: Path) -> Path:
    """A database whose index disagrees with its table: PRAGMA integrity_check fails."""
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE t(a INTEGER, b TEXT); CREATE INDEX t_b ON t(b);")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(50)])
    conn.commit()
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql='CREATE INDEX t_b ON t(a)' WHERE name='t_b'")
    conn.commit()
    conn.close()
    return path


def drill(store: LocalStorage, manifest: Manifest, scratch_dir: Path, tmp_path: Path):
    target = SqliteConnector(scratch_dir).scratch_target("t")
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    try:
        return run_drill(store, manifest, target, staging)
    finally:
        target.drop()


# Plain steps -------------------------------------------------------------------------
def test_drill_of_a_good_backup_passes(store, shop, scratch_dir, tmp_path):
    m = make_backup(store, "shop", shop)
    report = drill(store, m, scratch_dir, tmp_path)
    assert report.ok, report.problems
    assert report.tables == {t: {"manifest": n, "restored": n} for t, n in m.tables.items()}
    assert m.tables["orders"] == 300
    assert report.check_problems == []
    assert list(scratch_dir.iterdir()) == []  # dropped
    assert summary_line(report).startswith(f"drill passed for shop/{m.backup_id}: 3 table(s)")


def test_drill_catches_an_altered_object(store, shop, scratch_dir, tmp_path):
    m = make_backup(store, "shop", shop)
    alter_object(store, m)
    report = drill(store, m, scratch_dir, tmp_path)
    assert not report.ok
    assert m.objects[0].key in report.problems[0]
    assert "sha256" in report.problems[0]
    assert report.tables == {}  # nothing was restored


def test_drill_catches_row_counts_that_disagree(store, shop, scratch_dir, tmp_path):
    m = make_backup(store, "shop", shop)
    rewrite_counts(store, m, orders=301)
    from db_backup.catalog import load_manifest

    report = drill(store, load_manifest(store, "shop", m.backup_id), scratch_dir, tmp_path)
    assert report.problems == ["table orders: 300 rows restored, the manifest says 301"]
    assert report.tables["orders"] == {"manifest": 301, "restored": 300}


def test_drill_catches_a_backup_failing_the_engine_check(store, tmp_path, scratch_dir):
    m = make_backup(store, "bad", corrupt_index_db(tmp_path / "bad.db"))
    report = drill(store, m, scratch_dir, tmp_path)
    assert not report.ok
    assert report.problems[0] == "engine check: row 1 missing from index t_b"
    assert report.check_problems[:2] == [
        "row 1 missing from index t_b",
        "row 2 missing from index t_b",
    ]


@pytest.mark.parametrize(
    ("expected", "restored", "problems"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, ["table a: 2 rows restored, the manifest says 1"]),
        ({"a": 1, "b": 2}, {"a": 1}, ["table b (2 rows in the manifest) is missing after restore"]),
        ({}, {"x": 0}, ["table x was restored but the manifest does not list it"]),
    ],
)
def test_compare_counts(expected, restored, problems):
    assert compare_counts(expected, restored) == problems


def test_scratch_next_to_a_real_database_never_touches_it(shop, tmp_path):
    before = sha(shop)
    target = SqliteConnector(shop).scratch_target(scratch_label("shop", "20260101T000000Z"))
    assert target.path.parent == shop.parent and target.path != shop
    assert target.path.name.startswith(".db-backup-drill-shop_20260101t000000z-")
    target.drop()
    assert sha(shop) == before and not target.path.exists()


def test_scratch_that_cannot_be_created_fails_clearly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TargetError, match="cannot create a scratch SQLite database in"):
        SqliteConnector(blocker / "sub" / "x.db").scratch_target("t")


def test_scratch_refuses_mismatched_or_unsupported_engines(tmp_path):
    with pytest.raises(ConfigError, match="needs --scratch"):
        default_scratch_base("postgres")
    with pytest.raises(ConfigError, match="is a sqlite server but the backup is postgres"):
        open_scratch(SqliteConnector(tmp_path), "postgres", "x")

    class NoScratch:
        engine = "postgres"

        def describe(self) -> str:
            return "postgres://db"

    with pytest.raises(ConfigError, match="cannot create scratch databases yet"):
        open_scratch(NoScratch(), "postgres", "x")  # type: ignore[arg-type]


# The flow, against the session's Prefect API --------------------------------------------
def test_drill_flow_records_a_pass(prefect_api, store, shop, scratch_dir):
    from db_backup.flows.drill import drill_backup

    m = make_backup(store, "shop", shop)
    result = drill_backup(name="shop", storage=str(store.root), scratch=str(scratch_dir))
    assert result["ok"] and result["backup_id"] == m.backup_id
    state = latest_checks(store, "shop")[("shop", m.backup_id)]
    assert state.drill is not None and state.drill.ok
    assert state.drill.details["tables"]["orders"] == {"manifest": 300, "restored": 300}
    assert list(scratch_dir.iterdir()) == []
    artifact = read_artifact("drill-shop")
    assert f"Restore drill of `shop/{m.backup_id}`: passed" in artifact
    assert "| orders | 300 | 300 |" in artifact


def test_drill_flow_fails_on_an_altered_object_and_records_it(
    prefect_api, store, shop, scratch_dir
):
    from db_backup.flows.drill import drill_backup

    m = make_backup(store, "shop", shop)
    alter_object(store, m)
    with pytest.raises(DrillFailed, match=f"drill FAILED for shop/{m.backup_id}: object"):
        drill_backup(
            name="shop", backup=m.backup_id, storage=str(store.root), scratch=str(scratch_dir)
        )
    state = latest_checks(store, "shop")[("shop", m.backup_id)]
    assert state.drill is not None and state.drill.outcome == "failed"
    assert "sha256" in state.drill.problems[0]
    assert list(scratch_dir.iterdir()) == []
    assert "**FAILED**" in read_artifact("drill-shop")


def test_drill_flow_without_a_scratch_target_touches_nothing(prefect_api, store, shop, tmp_path):
    from db_backup.flows.drill import drill_backup

    make_backup(store, "shop", shop)
    before = sha(shop)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(TargetError, match="cannot create a scratch SQLite database"):
        drill_backup(name="shop", storage=str(store.root), scratch=str(blocker / "dir" / "x.db"))
    assert latest_checks(store, "shop") == {}  # no verdict recorded on the backup
    assert sha(shop) == before


# The CLI ---------------------------------------------------------------------------------
def test_cli_drill_list_verify_all(cli, store, shop, tmp_path):
    first = make_backup(store, "shop", shop)
    second = make_backup(store, "shop", shop)
    ok = cli("drill", "latest", "--name", "shop", "--storage", str(store.root))
    assert ok.returncode == 0, ok.stderr
    assert f"drill passed for shop/{second.backup_id}" in ok.stdout
    listed = cli("list", "--json", "--storage", str(store.root))
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert rows[second.backup_id]["last_drill_ok"] is True
    assert rows[second.backup_id]["last_drill_at"].endswith("Z")
    assert rows[first.backup_id]["last_drill_at"] is None
    alter_object(store, first)
    alter_object(store, second)
    bad = cli("verify", "--all", "--name", "shop", "--storage", str(store.root))
    assert bad.returncode == 8
    assert "2 of 2 backups of shop failed verification" in bad.stderr
    assert first.backup_id in bad.stderr and second.backup_id in bad.stderr
    rows = {
        r["id"]: r for r in json.loads(cli("list", "--json", "--storage", str(store.root)).stdout)
    }
    assert rows[first.backup_id]["last_verify_ok"] is False
    failed = cli("drill", first.backup_id, "--name", "shop", "--storage", str(store.root))
    assert failed.returncode == 8 and "drill FAILED" in failed.stderr


def test_verify_flow_all_reports_every_failure_and_records(prefect_api, store, shop):
    from db_backup.flows.restore import verify_backup

    good = make_backup(store, "shop", shop)
    bad = make_backup(store, "shop", shop)
    worse = make_backup(store, "shop", shop)
    alter_object(store, bad)
    store.delete(worse.objects[0].key)
    with pytest.raises(VerificationFailed) as caught:
        verify_backup(name="shop", storage=str(store.root), all_backups=True)
    message = str(caught.value)
    assert message.startswith("2 of 3 backups of shop failed verification")
    assert bad.backup_id in message and worse.backup_id in message
    assert "missing" in message and "sha256" in message
    states = latest_checks(store, "shop")
    assert states[("shop", good.backup_id)].verify.ok  # type: ignore[union-attr]
    assert not states[("shop", bad.backup_id)].verify.ok  # type: ignore[union-attr]
    assert "1 ok, 2 failed" in read_artifact("verify-shop")
    assert verify_backup(name="shop", backup=good.backup_id, storage=str(store.root)) == [
        good.backup_id
    ]
